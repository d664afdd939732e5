"""The Celery app: tasks carry the sender's schema (tenant-schemas-celery) and run in it."""

from celery.schedules import crontab
from tenant_schemas_celery.app import CeleryApp

app = CeleryApp("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The singleton's schedule. Each entry is a dispatcher that runs in `public` and fans the job
# out to tenants with a stagger; run keys (jobs.runs) make a second beat harmless.
app.conf.beat_schedule = {
    "purge-deleted-tenants": {
        "task": "tenants.purge_deleted_tenants",
        "schedule": crontab(minute=17),
    },
    "storage-usage": {
        "task": "jobs.dispatch_tenant_job",
        "schedule": crontab(minute="*/15"),
        "kwargs": {"job": "storage-usage", "every_seconds": 900},
    },
}
