"""Jobs: receiving is over, so the pending items are processed (by Celery or right here);
a job closes once none is pending; jobs that stopped moving are picked up again."""

import shutil
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from audit.services import audit_record
from studies.ingest.engine import ingest_items_process, pending_item_ids
from studies.models import IngestJob, IngestJobStatus, ItemOutcome
from studies.storage import staging_dir

BATCH_SIZE = 50
# A job with pending items and no progress for this long has lost its tasks (a worker
# killed with its prefetched batches, a broker that lost its queue): they are sent again.
DEFAULT_STALL_SECONDS = 60


def batches(item_ids: list[int], size: int = BATCH_SIZE) -> list[list[int]]:
    return [item_ids[i : i + size] for i in range(0, len(item_ids), size)]


def ingest_job_submit(*, job: IngestJob, run_now: bool = False) -> IngestJob:
    """Receiving is over: process the pending items, by Celery (default) or right here."""
    IngestJob.objects.filter(pk=job.pk).update(
        status=IngestJobStatus.QUEUED, progressed_at=timezone.now()
    )
    pending = pending_item_ids(job.pk)
    if not pending:
        ingest_job_refresh(job_id=job.pk)
    elif run_now:
        for batch in batches(pending):
            ingest_items_process(item_ids=batch)
        ingest_job_refresh(job_id=job.pk)
    else:
        _enqueue(job.pk, pending)
    job.refresh_from_db()
    return job


def _enqueue(job_id: int, pending: list[int]) -> None:
    from studies.tasks import ingest_batch

    transaction.on_commit(
        lambda: [ingest_batch.delay(job_id=job_id, item_ids=b) for b in batches(pending)]
    )


def ingest_job_refresh(*, job_id: int) -> IngestJob:
    """Close the job once no item is pending; audit it once, when it closes."""
    with transaction.atomic():
        job = IngestJob.objects.select_for_update().get(pk=job_id)
        if job.status in {IngestJobStatus.DONE, IngestJobStatus.FAILED}:
            return job
        if job.items.filter(outcome=ItemOutcome.PENDING).exists():
            if job.status == IngestJobStatus.QUEUED:
                job.status = IngestJobStatus.RUNNING
                job.save(update_fields=["status"])
            return job
        job.status = (
            IngestJobStatus.DONE
            if job.stored or job.duplicates or not job.total
            else IngestJobStatus.FAILED
        )
        if job.status == IngestJobStatus.FAILED and not job.error:
            job.error = "Every file was rejected; see each file's reason."
        job.finished_at = timezone.now()
        job.save(update_fields=["status", "finished_at", "error"])
        audit_record(
            action="ingest.job",
            actor=job.created_by,
            object_type="ingestjob",
            object_id=job.pk,
            outcome="success" if job.stored else "failure",
            details={
                "source": job.source,
                "total": job.total,
                "stored": job.stored,
                "duplicates": job.duplicates,
                "rejected": job.rejected,
            },
        )
    shutil.rmtree(staging_dir(job.pk), ignore_errors=True)
    return job


def ingest_jobs_stalled(*, stall_seconds: int | None = None) -> "QuerySet[IngestJob]":
    """Queued or running jobs without progress for `stall_seconds`."""
    stall = stall_seconds or int(
        getattr(settings, "PORTAL_INGEST_STALL_SECONDS", DEFAULT_STALL_SECONDS)
    )
    cutoff = timezone.now() - timedelta(seconds=stall)
    return IngestJob.objects.filter(
        status__in=[IngestJobStatus.QUEUED, IngestJobStatus.RUNNING]
    ).filter(Q(progressed_at__lt=cutoff) | Q(progressed_at__isnull=True, created_at__lt=cutoff))


def ingest_jobs_recover(*, stall_seconds: int | None = None) -> dict[str, Any]:
    """Send again the pending items of queued or running jobs that made no progress for
    `stall_seconds`: their tasks were lost. Items are idempotent, so a task that was only
    slow finds its items finished and does nothing."""
    stall = stall_seconds or int(
        getattr(settings, "PORTAL_INGEST_STALL_SECONDS", DEFAULT_STALL_SECONDS)
    )
    stalled = ingest_jobs_stalled(stall_seconds=stall)
    counts = {"jobs": 0, "items": 0, "closed": 0}
    for job_id in stalled.values_list("pk", flat=True):
        pending = pending_item_ids(job_id)
        if not pending:
            ingest_job_refresh(job_id=job_id)
            counts["closed"] += 1
            continue
        with transaction.atomic():
            IngestJob.objects.filter(pk=job_id).update(progressed_at=timezone.now())
            _enqueue(job_id, pending)
        counts["jobs"] += 1
        counts["items"] += len(pending)
    return counts
