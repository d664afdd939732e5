"""Tenant tasks about storage; thin wrappers around services."""

from celery import shared_task

from jobs.runs import job_run
from jobs.tasks import TenantScopedTask
from studies.ingest import ingest_item_process, ingest_job_refresh
from studies.services import media_measure_usage


@shared_task(base=TenantScopedTask, name="studies.measure_storage_usage")
def measure_storage_usage(period: str) -> dict[str, int] | None:
    """Measure every medium of the current tenant from its files (the usage job)."""
    with job_run("storage-usage", period) as counts:
        if counts is None:
            return None
        for _medium, usage in media_measure_usage():
            counts.add("media")
            counts.add("bytes", usage.bytes)
            counts.add("files", usage.files)
        return dict(counts)


@shared_task(base=TenantScopedTask, name="studies.ingest_batch")
def ingest_batch(job_id: int, item_ids: list[int]) -> dict[str, int]:
    """Process a batch of staged files; re-running it (after a crash) redoes only the rest."""
    outcomes: dict[str, int] = {}
    for item_id in item_ids:
        outcome = ingest_item_process(item_id=item_id)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    ingest_job_refresh(job_id=job_id)
    return outcomes
