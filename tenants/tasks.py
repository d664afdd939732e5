"""The platform's periodic job: purge tenants whose deletion grace period is over."""

import logging

from celery import shared_task
from django.utils import timezone

from jobs.runs import job_run, period_key
from jobs.tasks import PlatformTask
from tenants import services

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
