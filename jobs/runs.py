"""Claiming and finishing job runs so that each job runs once per schema and period."""

import logging
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from jobs.models import JobRun, JobStatus

logger = logging.getLogger(__name__)


def period_key(moment: datetime, *, every_seconds: int) -> str:
    """The schedule slot `moment` falls in, e.g. '2026-11-23T14:00' for an hourly job."""
    epoch = int(moment.timestamp())
    slot = datetime.fromtimestamp(epoch - epoch % every_seconds, tz=moment.tzinfo)
    return slot.strftime("%Y-%m-%dT%H:%M")


class RunCounts(dict[str, int]):
    """Counters a job fills in while it runs; saved on the run row."""

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
