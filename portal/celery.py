"""The Celery app: tasks carry the sender's schema (tenant-schemas-celery) and run in it."""

from celery.schedules import crontab
from celery.signals import worker_ready, worker_shutdown
from tenant_schemas_celery.app import CeleryApp

app = CeleryApp("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

HOUR, DAY = 3600, 86400


def _tenant_job(job: str, every_seconds: int, spread_seconds: int | None = None) -> dict:
    kwargs: dict = {"job": job, "every_seconds": every_seconds}
    if spread_seconds is not None:
        kwargs["spread_seconds"] = spread_seconds
    return {"task": "jobs.dispatch_tenant_job", "kwargs": kwargs}


# The singleton's schedule. Each entry is a dispatcher that runs in `public` and fans the job
# out to tenants with a stagger; run keys (jobs.runs) make a second beat harmless. The night
# jobs are spread over a few hours only, so that they stay in the night.
app.conf.beat_schedule = {
    # Read by /health/ready (portal/health.py); a late copy is dropped, not written as fresh.
    "singleton-heartbeat": {
        "task": "portal.singleton_heartbeat",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
    # After the :30 storage measurement; a JobRun per hour in public keeps it to one run.
    "usage-metering": {
        "task": "tenants.meter_usage",
        "schedule": crontab(minute=40),
    },
    # The fleet page's, /health/ready's and /metrics' figures (tenants/figures.py).
    "fleet-figures": {
        "task": "tenants.refresh_fleet_figures",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
    "purge-deleted-tenants": {
        "task": "tenants.purge_deleted_tenants",
        "schedule": crontab(minute=17),
    },
    "storage-usage": {
        **_tenant_job("storage-usage", 15 * 60),
        "schedule": crontab(minute="*/15"),
    },
    "watermark-migration": {
        **_tenant_job("watermark-migration", HOUR),
        "schedule": crontab(minute=5),
    },
    "retention": {
        **_tenant_job("retention", DAY, spread_seconds=3 * HOUR),
        "schedule": crontab(hour=1, minute=30),
    },
    "verification": {
        **_tenant_job("verification", DAY, spread_seconds=4 * HOUR),
        "schedule": crontab(hour=2, minute=0),
    },
    # Jobs whose tasks were lost (a killed worker, a broker restart) are sent again within
    # two minutes, instead of after the broker's visibility timeout.
    "ingest-recovery": {
        **_tenant_job("ingest-recovery", 60, spread_seconds=20),
        "schedule": 60.0,
        "options": {"expires": 55},
    },
    # Each tenant's audit rows older than audit.chain.SEAL_AFTER join its hash chain.
    "audit-seal": {
        **_tenant_job("audit-seal", 15 * 60),
        "schedule": crontab(minute="7-59/15"),
    },
    # Every remote node gets a C-ECHO each quarter of an hour: its status in /settings/.
    "node-echo": {
        **_tenant_job("node-echo", 15 * 60),
        "schedule": crontab(minute="11-59/15"),
    },
    "quarantine-purge": {
        **_tenant_job("quarantine-purge", DAY, spread_seconds=2 * HOUR),
        "schedule": crontab(hour=4, minute=45),
    },
}


@worker_ready.connect
def _announce_worker(sender: object = None, **_: object) -> None:
    """The platform page sees this worker from its snapshot in Redis (dicomnet/presence.py)."""
    from dicomnet.presence import WORKER_PREFIX, Presence

    name = str(getattr(sender, "hostname", "") or "")
    presence = Presence(dict, prefix=WORKER_PREFIX, name=name)
    presence.start()
    worker_shutdown.connect(lambda **_: presence.stop(), weak=False)
