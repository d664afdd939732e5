"""Task bases that pin where a task may run, and the per-tenant fan-out of periodic jobs."""

import logging
from typing import Any

from celery import shared_task
from django.conf import settings
from django.utils import timezone
from tenant_schemas_celery.task import TenantTask

from jobs.runs import period_key
from portal.schemas import current_schema

logger = logging.getLogger(__name__)


class TenantRequired(RuntimeError):
    """A tenant task arrived without a tenant: running it in `public` would be a leak."""


class TenantScopedTask(TenantTask):
    """Base of every task that touches tenant data; it refuses to run in `public`."""

    abstract = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if current_schema() == "public":
            raise TenantRequired(f"{self.name} must be sent from a tenant's schema")
        return super().__call__(*args, **kwargs)


class PlatformTask(TenantTask):
    """Base of tasks about the platform itself (tenant purge, dispatchers): `public` only."""

    abstract = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if current_schema() != "public":
            raise RuntimeError(f"{self.name} runs in the public schema only")
        return super().__call__(*args, **kwargs)


# The per-tenant task of each job that `dispatch_tenant_job` can fan out.
TENANT_JOBS = {
    "storage-usage": "studies.measure_storage_usage",
    "watermark-migration": "studies.migrate_watermarks",
    "retention": "studies.apply_retention",
    "verification": "studies.verify_storage",
    "quarantine-purge": "studies.purge_quarantine",
    "ingest-recovery": "studies.recover_ingest",
    "audit-seal": "audit.seal_log",
    "node-echo": "configuration.echo_nodes",
}


def send_tenant_job(job: str, period: str) -> None:
    """Queue the active tenant's task of `job` for `period` (a retry from /jobs/)."""
    schema = current_schema()
    if schema == "public":
        raise TenantRequired(f"{job} must be queued from a tenant's schema")
    dispatch_tenant_job.app.send_task(
        TENANT_JOBS[job],
        kwargs={"period": period},
        headers={"_schema_name": schema},
        queue=settings.CELERY_PERIODIC_QUEUE,
    )


@shared_task(base=PlatformTask, name="jobs.dispatch_tenant_job")
def dispatch_tenant_job(job: str, every_seconds: int, spread_seconds: int | None = None) -> int:
    """Send `job` to every active, fully migrated tenant, spread over the interval.

    Each tenant's task gets the same period key, so a second beat (or a retry of this
    dispatcher) sends duplicates that find the run already claimed and do nothing. Each
    tenant's task does at most PORTAL_JOB_BATCH_LIMIT items; the next period continues.
    """
    from tenants.selectors import schedulable_tenants

    task_name = TENANT_JOBS[job]
    period = period_key(timezone.now(), every_seconds=every_seconds)
    tenants = schedulable_tenants()
    spread = every_seconds // 2 if spread_seconds is None else spread_seconds
    step = spread / max(len(tenants), 1)
    for index, tenant in enumerate(tenants):
        # Sent with the tenant's schema in the headers: the task runs in that schema.
        dispatch_tenant_job.app.send_task(
            task_name,
            kwargs={"period": period},
            countdown=round(index * step, 1),
            headers={"_schema_name": tenant.schema_name},
            queue=settings.CELERY_PERIODIC_QUEUE,
        )
    logger.info("dispatched %s for %s to %d tenants", job, period, len(tenants))
    return len(tenants)
