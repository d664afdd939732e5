"""What the archive's jobs as a DICOM SCU share: a queued job runs once, and always ends."""

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import models, transaction

logger = logging.getLogger(__name__)

Job = TypeVar("Job", bound=models.Model)


def run_queued(
    model: type[Job], job_id: int, *, work: Callable[[Job], None], finish: Callable[..., Any]
) -> Job:
    """Claim the job if it is still queued (a redelivered task finds it claimed and does
    nothing), do `work`, and end it with `finish(job, error=...)` if `work` raised."""
    with transaction.atomic():
        job = model._default_manager.select_for_update().get(pk=job_id)
        if getattr(job, "status") != "queued":  # noqa: B009 (both status enums spell it so)
            return job
        job.status = "running"  # type: ignore[attr-defined]
        job.save(update_fields=["status"])
    try:
        work(job)
    except Exception as error:  # the job must end, whatever happened
        logger.exception("%s failed", job)
        finish(job, error=f"{type(error).__name__}: {error}")
    return job
