"""Tenant tasks about storage; thin wrappers around services."""

from typing import Any

from celery import shared_task

from jobs.runs import RunCounts, last_counts, periodic_job
from jobs.tasks import TenantScopedTask
from studies.ingest import ingest_items_process, ingest_job_refresh, ingest_jobs_recover
from studies.ingest.jobs import ingest_jobs_stalled
from studies.maintenance import services as maintenance
from studies.media.services import media_measure_usage


@shared_task(base=TenantScopedTask, name="studies.measure_storage_usage")
def measure_storage_usage(period: str) -> dict[str, int] | None:
    """Measure every medium of the current tenant from its files (the usage job)."""

    def measure() -> dict[str, int]:
        counts = RunCounts()
        for _medium, usage in media_measure_usage():
            counts.add("media")
            counts.add("bytes", usage.bytes)
            counts.add("files", usage.files)
        return counts

    return periodic_job("storage-usage", period, measure)


@shared_task(base=TenantScopedTask, name="studies.ingest_batch")
def ingest_batch(job_id: int, item_ids: list[int]) -> dict[str, int]:
    """Process a batch of staged files; re-running it (after a crash) redoes only the rest."""
    outcomes: dict[str, int] = {}
    for result in ingest_items_process(item_ids=item_ids).values():
        outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
    ingest_job_refresh(job_id=job_id)
    return outcomes


@shared_task(base=TenantScopedTask, name="studies.recover_ingest")
def recover_ingest(period: str) -> dict[str, Any] | None:
    """Send again the items of ingest jobs whose tasks were lost; a run is recorded only
    when there was something to recover (this runs every minute)."""
    if not ingest_jobs_stalled().exists():
        return None
    return periodic_job("ingest-recovery", period, ingest_jobs_recover)


@shared_task(base=TenantScopedTask, name="studies.make_series_thumbnail")
def make_series_thumbnail(series_id: int) -> bool:
    """Render the series' thumbnail (or record why it cannot be made); safe to re-run."""
    from studies.index.services import series_thumbnail_make

    series = series_thumbnail_make(series_id=series_id)
    return bool(series is not None and series.thumbnail)


@shared_task(base=TenantScopedTask, name="studies.migrate_watermarks")
def migrate_watermarks(period: str) -> dict[str, Any] | None:
    """Move the oldest studies off media above their high watermark."""
    return periodic_job("watermark-migration", period, maintenance.media_migrate_watermarks)


@shared_task(base=TenantScopedTask, name="studies.apply_retention")
def apply_retention(period: str) -> dict[str, Any] | None:
    """Delete the studies the tenant's retention rules no longer keep."""
    return periodic_job("retention", period, maintenance.retention_apply)


@shared_task(base=TenantScopedTask, name="studies.verify_storage")
def verify_storage(period: str) -> dict[str, Any] | None:
    """Check the index against the files; a capped run continues where the last one stopped."""
    after = int(last_counts("verification").get("cursor", 0))
    return periodic_job("verification", period, lambda: maintenance.storage_verify(after_id=after))


@shared_task(base=TenantScopedTask, name="studies.purge_quarantine")
def purge_quarantine(period: str) -> dict[str, Any] | None:
    """Delete quarantined files older than 30 days."""
    return periodic_job("quarantine-purge", period, maintenance.quarantine_purge)


@shared_task(base=TenantScopedTask, name="studies.retrieve_from_node")
def retrieve_from_node(job_id: int) -> dict[str, int]:
    """Pull a study from a remote node by C-MOVE to this archive (dicomnet/retrieve.py)."""
    from dicomnet.retrieve import retrieve_job_run

    job = retrieve_job_run(job_id)
    return {"completed": job.completed, "failed": job.failed}


@shared_task(base=TenantScopedTask, name="studies.send_to_node")
def send_to_node(job_id: int) -> dict[str, int]:
    """Send a study or series to a remote node by C-STORE (dicomnet/send.py)."""
    from dicomnet.send import send_job_run

    job = send_job_run(job_id)
    return {"sent": job.sent, "failed": job.failed}
