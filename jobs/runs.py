"""Claiming and finishing job runs so that each job runs once per schema and period."""

import logging
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone

from audit.services import audit_record
from jobs.models import JobRun, JobStatus

logger = logging.getLogger(__name__)


def period_key(moment: datetime, *, every_seconds: int) -> str:
    """The schedule slot `moment` falls in, e.g. '2026-11-23T14:00' for an hourly job."""
    epoch = int(moment.timestamp())
    slot = datetime.fromtimestamp(epoch - epoch % every_seconds, tz=moment.tzinfo)
    return slot.strftime("%Y-%m-%dT%H:%M")


class RunCounts(dict[str, Any]):
    """Counters (and a job's report) filled in while it runs; saved on the run row."""

    def add(self, name: str, amount: int = 1) -> None:
        self[name] = self.get(name, 0) + amount


@contextmanager
def job_run(job: str, period: str) -> Iterator[RunCounts | None]:
    """Claim (job, period) in the active schema; yields None if another process already did.

    A failed run may be claimed again (that is what "retry" means), a running or
    succeeded one may not.
    """
    with transaction.atomic():
        run = JobRun.objects.select_for_update().filter(job=job, period=period).first()
        if run is not None and run.status != JobStatus.FAILED:
            logger.info("job %s for %s already claimed (%s); skipping", job, period, run.status)
            run = None
            claimed = False
        else:
            claimed = True
            if run is None:
                try:
                    with transaction.atomic():
                        run = JobRun.objects.create(job=job, period=period)
                except IntegrityError:
                    claimed = False
            else:
                run.status, run.error, run.finished_at = JobStatus.RUNNING, "", None
                run.save(update_fields=["status", "error", "finished_at"])
    if not claimed or run is None:
        yield None
        return
    counts = RunCounts()
    try:
        yield counts
    except Exception:
        run.status, run.error = JobStatus.FAILED, traceback.format_exc(limit=5)
        raise
    else:
        run.status = JobStatus.SUCCEEDED
    finally:
        run.finished_at, run.counts = timezone.now(), dict(counts)
        run.save(update_fields=["status", "error", "finished_at", "counts"])


def periodic_job(
    job: str, period: str, work: Callable[[], Mapping[str, Any]]
) -> dict[str, Any] | None:
    """Run `work` as the tenant's run of `job` for `period`, once, if the tenant allows it.

    A job the tenant switched off in /settings/ records nothing: a row every quarter of an
    hour saying "skipped" would bury the runs that did something.
    """
    from configuration.selectors import job_enabled

    if not job_enabled(job):
        logger.info("job %s is switched off for this tenant; not run for %s", job, period)
        return None
    with job_run(job, period) as counts:
        if counts is None:
            return None
        counts.update(work())
        return dict(counts)


def last_counts(job: str) -> dict[str, Any]:
    """What the latest successful run of `job` reported (where a capped job continues)."""
    counts = (
        JobRun.objects.filter(job=job, status=JobStatus.SUCCEEDED)
        .order_by("-started_at", "-id")
        .values_list("counts", flat=True)
        .first()
    )
    return counts or {}


def job_run_retry(*, run: JobRun, request: HttpRequest | None = None) -> JobRun:
    """Queue a failed run's task again for the same period; the task re-claims the run."""
    from jobs.tasks import TENANT_JOBS, send_tenant_job

    with transaction.atomic():
        current = JobRun.objects.select_for_update().get(pk=run.pk)
        if current.status != JobStatus.FAILED:
            raise ValidationError("Only failed runs can be retried; this one is not failed.")
        if current.job not in TENANT_JOBS:
            raise ValidationError(f"“{current.job}” is not a job that can be queued from here.")
        audit_record(
            action="job.retry",
            request=request,
            target=current,
            details={"job": current.job, "period": current.period},
        )
        transaction.on_commit(lambda: send_tenant_job(current.job, current.period))
    return current
