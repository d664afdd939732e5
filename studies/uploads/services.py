"""Turning an upload (single files, many files, zips, a server folder) into staged ingest items."""

import os
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import ApiToken, TokenScope
from audit.services import audit_record
from studies.ingest import JobStaging, Refusal
from studies.models import IngestItem, IngestJob, IngestJobStatus, ItemOutcome
from studies.storage import quarantine_dir, resolve_inside, staging_dir
from studies.uploads.handlers import StagedUpload

GIB = 1 << 30
BOMB_RATIO = 200
BOMB_MIN_BYTES = 100 * (1 << 20)
_ZIP_MAGIC = b"PK\x03\x04"
_IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


class UploadRefused(Exception):
    """The whole upload is refused (too large, a zip bomb); the job fails with this reason."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass
class StageCounts:
    staged: int = 0
    rejected: int = 0

    def add(self, item: IngestItem) -> None:
        if item.outcome == ItemOutcome.REJECTED:
            self.rejected += 1
        else:
            self.staged += 1


def max_upload_bytes() -> int:
    return int(getattr(settings, "PORTAL_MAX_UPLOAD_BYTES", 20 * GIB))


# -- reads ------------------------------------------------------------------------------------


def ingest_job_list(*, token: ApiToken | None = None) -> QuerySet[IngestJob]:
    """The tenant's ingest jobs, newest first. Seen through a `store` token, only the jobs
    that token sent: a modality's upload credential must not read the whole tenant's traffic
    (names, UIDs and reasons of other senders)."""
    jobs = IngestJob.objects.select_related("created_by").order_by("-created_at", "-id")
    if token is not None and token.scope == TokenScope.STORE:
        jobs = jobs.filter(token=token)
    return jobs


def ingest_job_items(*, job: IngestJob) -> QuerySet[IngestItem]:
    return job.items.order_by("id")


# -- staging ----------------------------------------------------------------------------------


def is_zip(name: str, stream: IO[bytes]) -> bool:
    """A `.zip` name, or a stream that starts like one (DICOM starts with a 128-byte preamble)."""
    if name.lower().endswith(".zip"):
        return True
    if not (hasattr(stream, "seek") and hasattr(stream, "tell")):
        return False
    start = stream.tell()
    head = stream.read(4)
    stream.seek(start)
    return head == _ZIP_MAGIC


def upload_stage_files(*, job: IngestJob, files: list[Any]) -> StageCounts:
    """Stage uploaded files (Django UploadedFile or any named binary file); zips are unpacked.

    A refused zip raises UploadRefused after failing the job.
    """
    counts = StageCounts()
    with JobStaging(job) as staging:
        for upload in files:
            name = getattr(upload, "name", None) or "file"
            if is_zip(name, upload):
                counts_zip = upload_stage_zip(staging=staging, name=name, archive=upload)
                counts.staged += counts_zip.staged
                counts.rejected += counts_zip.rejected
            elif isinstance(upload, StagedUpload):  # received into staging already: renamed
                counts.add(_adopt(staging, name, upload))
            else:
                counts.add(staging.stage(name=name, stream=upload))
    return counts


def _adopt(staging: JobStaging, name: str, upload: StagedUpload) -> IngestItem:
    limit, size = int(settings.PORTAL_MAX_INSTANCE_BYTES), upload.size or 0
    if size > limit:
        return staging.refuse(
            name=name, code=Refusal.TOO_LARGE, reason=f"The file is larger than {limit} bytes."
        )
    return staging.adopt(name=name, path=upload.path, size=size, sha256=upload.sha256)


def _unsafe_entry(name: str) -> str:
    """Why a zip entry name may not be extracted, or "" when it is safe."""
    normalised = name.replace("\\", "/")
    path = PurePosixPath(normalised)
    if normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":"):
        return "The entry has an absolute path; zip entries must be relative."
    if ".." in path.parts:
        return "The entry's path contains '..' and would land outside the upload."
    return ""


def _ignored_entry(info: zipfile.ZipInfo) -> bool:
    parts = PurePosixPath(info.filename.replace("\\", "/")).parts
    return info.is_dir() or "__MACOSX" in parts or (bool(parts) and parts[-1] in _IGNORED_NAMES)


def _check_archive(archive: zipfile.ZipFile, limit: int) -> None:
    """Refuse the whole zip from its directory, before extracting any byte of it."""
    total = 0
    for info in archive.infolist():
        if _ignored_entry(info):
            continue
        total += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > BOMB_RATIO and info.file_size > BOMB_MIN_BYTES:
            raise UploadRefused(
                f"The zip entry {info.filename!r} expands {ratio:.0f} times to "
                f"{info.file_size} bytes; this looks like a zip bomb and was not extracted."
            )
    if total > limit:
        raise UploadRefused(
            f"The zip expands to {total} bytes, more than the upload limit of {limit} bytes."
        )


def upload_stage_zip(*, staging: JobStaging, name: str, archive: IO[bytes]) -> StageCounts:
    """Extract a zip entry by entry, streaming each into staging; unsafe names are rejected."""
    counts = StageCounts()
    try:
        zipped = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError):
        counts.add(
            staging.refuse(name=name, code="bad-zip", reason="The file is not a readable zip.")
        )
        return counts
    with zipped:
        try:
            _check_archive(zipped, max_upload_bytes())
        except UploadRefused as refused:
            staging.flush()  # the files staged so far are rejected with the job
            upload_job_fail(job=staging.job, reason=f"{name}: {refused.message}")
            raise
        for info in zipped.infolist():
            if _ignored_entry(info):
                continue
            entry_name = f"{name}/{info.filename}"
            if unsafe := _unsafe_entry(info.filename):
                counts.add(staging.refuse(name=entry_name, code="zip-slip", reason=unsafe))
                continue
            try:
                with zipped.open(info) as entry:
                    counts.add(staging.stage(name=entry_name, stream=entry))
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError) as error:
                counts.add(
                    staging.refuse(
                        name=entry_name,
                        code="bad-zip",
                        reason=f"The zip entry could not be read: {error}",
                    )
                )
    return counts


def upload_job_fail(*, job: IngestJob, reason: str) -> IngestJob:
    """Stop a job that is still receiving: its pending files are rejected with the reason."""
    with transaction.atomic():
        locked = IngestJob.objects.select_for_update().get(pk=job.pk)
        dropped = IngestItem.objects.filter(job=locked, outcome=ItemOutcome.PENDING).update(
            outcome=ItemOutcome.REJECTED,
            reason_code="upload-refused",
            reason=f"The upload was refused: {reason}",
            processed_at=timezone.now(),
        )
        IngestJob.objects.filter(pk=locked.pk).update(
            status=IngestJobStatus.FAILED,
            error=reason,
            finished_at=timezone.now(),
            rejected=F("rejected") + dropped,
        )
        audit_record(
            action="ingest.job",
            actor=locked.created_by,
            object_type="ingestjob",
            object_id=locked.pk,
            outcome="failure",
            details={"source": locked.source, "error": reason},
        )
    shutil.rmtree(staging_dir(job.pk), ignore_errors=True)
    job.refresh_from_db()
    return job


def ingest_job_start(*, job: IngestJob) -> IngestJob:
    """Mark a job whose items this process handles itself (a folder import) as running."""
    IngestJob.objects.filter(pk=job.pk).update(status=IngestJobStatus.RUNNING)
    job.refresh_from_db()
    return job


def quarantine_file(*, item: IngestItem, request: HttpRequest) -> Path:
    """The quarantined file of a rejected item (inside the job's quarantine); audited."""
    folder = quarantine_dir(item.job_id)
    path = resolve_inside(str(folder), Path(item.quarantine_path))
    if not item.quarantine_path or not path.is_file():
        raise FileNotFoundError(item.quarantine_path)
    audit_record(
        action="ingest.quarantine_download",
        request=request,
        target=item,
        details={"job": item.job_id, "name": item.name, "reason_code": item.reason_code},
    )
    return path


# -- server folders ---------------------------------------------------------------------------


def folder_files(root: Path) -> Iterator[Path]:
    """Regular files below `root`, hidden ones skipped; links are followed only inside it."""
    root = root.resolve()
    for directory, subdirs, names in os.walk(root, followlinks=False):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or name in _IGNORED_NAMES:
                continue
            path = Path(directory) / name
            real = path.resolve()
            if real != root and root not in real.parents:
                continue
            if real.is_file():
                yield path
