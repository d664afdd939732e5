"""The platform's periodic jobs: purge tenants past their grace period, meter usage."""

import logging

from celery import shared_task
from django.db import DatabaseError
from django.utils import timezone

from jobs.runs import job_run, period_key
from jobs.tasks import PlatformTask
from tenants import services, usage

logger = logging.getLogger(__name__)


@shared_task(base=PlatformTask, name="tenants.purge_deleted_tenants")
def purge_deleted_tenants(period: str | None = None) -> dict[str, int] | None:
    """Drop schema and files of every tenant past its grace period; one run per hour."""
    period = period or period_key(timezone.now(), every_seconds=3600)
    with job_run("tenant-purge", period) as counts:
        if counts is None:
            return None
        for tenant in services.tenants_due_for_purge():
            services.tenant_purge(tenant=tenant)
            logger.info("purged tenant %s", tenant.slug)
            counts.add("purged")
        return dict(counts)


@shared_task(base=PlatformTask, name="tenants.refresh_fleet_figures")
def refresh_fleet_figures() -> int:
    """Every minute: the figures of the tenants measured longest ago, within a time budget."""
    from tenants.figures import figures_refresh

    return figures_refresh()


@shared_task(base=PlatformTask, name="tenants.meter_usage")
def meter_usage(period: str | None = None) -> dict[str, int] | None:
    """Hourly: today's running usage record of every metered tenant, and yesterday's final one.

    Runs in `public` and reads each tenant's tables by schema-qualified SQL. Yesterday is
    computed until one computation happened after it ended; a tenant whose tables cannot be
    read is logged and counted as failed, and the others are still metered.
    """
    period = period or period_key(timezone.now(), every_seconds=3600)
    with job_run("usage-metering", period) as counts:
        if counts is None:
            return None
        tenants = list(usage.metered_tenants())
        due = usage.days_due(tenants, today=usage.utc_today())
        for tenant in tenants:
            for day in due[tenant.pk]:
                try:
                    usage.usage_record_compute(tenant=tenant, day=day)
                except DatabaseError:
                    logger.exception("usage of %s on %s could not be computed", tenant.slug, day)
                    counts.add("failed")
                else:
                    counts.add("computed")
        counts["tenants"] = len(tenants)
        return dict(counts)


@shared_task(base=PlatformTask, name="tenants.run_selftest")
def run_selftest(run_id: int) -> str:
    """The tenant-boundary self-test started from the super-admin site."""
    from tenants.selftest import selftest_execute

    return selftest_execute(run_id).status
