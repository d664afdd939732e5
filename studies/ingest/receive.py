"""Receiving: every channel stages its files into an ingest job before anything is parsed.

A staged file is written once, hashed and fsynced as it arrives, into the tenant's staging
area on its storage root; processing later links it into place on a medium (no second
write when both share a filesystem). A file refused while arriving is recorded as a
rejected item with its reason, so the job's counts always add up.
"""

import os
import re
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from studies.ingest.outcomes import IngestRefused, Refusal
from studies.models import IngestItem, IngestJob, ItemOutcome
from studies.storage import (
    StagingLimitExceeded,
    fsync_directory,
    inside_tenant_root,
    quarantine_dir,
    staging_dir,
    write_stream,
)

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def ingest_job_create(*, source: str, created_by: Any = None, description: str = "") -> IngestJob:
    job = IngestJob.objects.create(
        source=source, created_by=created_by, description=description[:255]
    )
    staging_dir(job.pk).mkdir(parents=True, exist_ok=True)
    return job


def staged_file_path(job: IngestJob) -> Path:
    """A fresh name in the job's staging folder (never derived from what the sender said)."""
    return staging_dir(job.pk) / f"{uuid.uuid4().hex}.dcm"


def ingest_item_stage(
    *, job: IngestJob, name: str, stream: IO[bytes] | Iterable[bytes], max_bytes: int | None = None
) -> IngestItem:
    """Write one incoming file to the job's staging folder, streaming, hashed, size-limited."""
    limit = max_bytes or settings.PORTAL_MAX_INSTANCE_BYTES
    path = staged_file_path(job)
    try:
        written = write_stream(path, stream, limit=limit)
    except StagingLimitExceeded:
        return ingest_item_refuse(
            job=job,
            name=name,
            code=Refusal.TOO_LARGE,
            reason=f"The file is larger than {limit} bytes.",
        )
    except IngestRefused as refused:  # a channel's stream refusing its own bytes
        return ingest_item_refuse(job=job, name=name, code=refused.code, reason=refused.message)
    except OSError as error:
        # A full or failing staging disk: the item is closed, so its job can close too.
        reason = f"The file could not be written to staging: {error.strerror or error}."
        ingest_item_refuse(job=job, name=name, code=Refusal.STAGING_FAILED, reason=reason)
        raise
    return _item_create(job, name, path, written.size, written.sha256)


def ingest_file_stage(
    *, job: IngestJob, name: str, path: Path, size: int, sha256: str
) -> IngestItem:
    """Adopt a file already received and hashed in this tenant's storage (the gateway's):
    it is renamed into the job's staging folder and fsynced, never copied."""
    target = staged_file_path(job)
    os.replace(path, target)
    with target.open("rb") as stream:
        os.fsync(stream.fileno())
    return _item_create(job, name, target, size, sha256)


def _item_create(job: IngestJob, name: str, path: Path, size: int, sha256: str) -> IngestItem:
    with transaction.atomic():
        item = IngestItem.objects.create(
            job=job, name=name[:512], staged_path=str(path), size_bytes=size, sha256=sha256
        )
        IngestJob.objects.filter(pk=job.pk).update(total=F("total") + 1)
    return item


def ingest_item_refuse(*, job: IngestJob, name: str, code: str, reason: str) -> IngestItem:
    """Record a file that was refused before it could be staged (e.g. an unsafe zip entry)."""
    with transaction.atomic():
        item = IngestItem.objects.create(
            job=job,
            name=name[:512],
            outcome=ItemOutcome.REJECTED,
            reason_code=str(code),
            reason=reason,
            processed_at=timezone.now(),
        )
        IngestJob.objects.filter(pk=job.pk).update(total=F("total") + 1, rejected=F("rejected") + 1)
    return item


def quarantine_target(item_id: int, job_id: int, name: str, *, root: Path | None = None) -> Path:
    """Where a refused item's file is kept: `.quarantine/<job>/<item>-<safe name>`."""
    safe = _UNSAFE_NAME.sub("_", Path(name).name)[-100:] or "file"
    folder = quarantine_dir(job_id) if root is None else root / ".quarantine" / str(job_id)
    return folder / f"{item_id}-{safe}"


def ingest_item_reject(*, item: IngestItem, code: str, reason: str) -> None:
    """Refuse a pending item before processing: a staged file goes to quarantine with the
    reason; an item whose staging broke off (no staged file) is just counted as rejected."""
    staged = Path(item.staged_path) if item.staged_path else None
    target = ""
    if staged is not None and inside_tenant_root(staged) and staged.is_file():
        destination = quarantine_target(item.pk, item.job_id, item.name)
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, destination)
        fsync_directory(destination.parent)
        target = str(destination)
    with transaction.atomic():
        updated = IngestItem.objects.filter(pk=item.pk, outcome=ItemOutcome.PENDING).update(
            outcome=ItemOutcome.REJECTED,
            reason_code=str(code),
            reason=reason,
            quarantine_path=target,
            processed_at=timezone.now(),
        )
        if updated:
            IngestJob.objects.filter(pk=item.job_id).update(rejected=F("rejected") + 1)
