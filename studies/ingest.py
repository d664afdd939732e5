"""Ingest: every source stages files into a job; each item is then processed exactly once.

An item goes `pending` -> `stored` | `replaced` | `duplicate` | `rejected`. Processing is
idempotent: a worker killed anywhere re-runs the item from `pending`, the file lands at the
same deterministic path (written to a temp file, fsynced, renamed), and the index rows and
the item's outcome commit in one transaction. Rejected files move to the tenant's
quarantine with their reason; nothing is silently dropped.
"""

import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from audit.services import audit_record
from portal.metrics import ingest_observe
from portal.schemas import current_tenant
from studies.dicom import DicomParseError, ParsedInstance, parse_file
from studies.models import (
    IngestItem,
    IngestJob,
    IngestJobStatus,
    Instance,
    ItemOutcome,
    MediumKind,
    MediumStatus,
    Patient,
    Series,
    StorageMedium,
    Study,
)
from studies.storage import StoragePathError, resolve_inside

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
BATCH_SIZE = 50
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


# Outcomes a sender may treat as "the archive has it" (a kept duplicate included), and the
# refusals that say nothing about the file (retry once room is made): DIMSE and STOW-RS
# answer with these alike.
STORED_OUTCOMES = frozenset({ItemOutcome.STORED, ItemOutcome.REPLACED, ItemOutcome.DUPLICATE})
OUT_OF_RESOURCES_CODES = frozenset({"quota", "no-medium", "too-large"})


class IngestRefused(Exception):
    """A file that cannot be taken in, with a stable code and a sentence for people."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class StoredFile:
    medium: StorageMedium
    relative_path: str
    size: int
    sha256: str


# -- where things live ------------------------------------------------------------------------


def tenant_root() -> Path:
    """The active tenant's allowed storage root."""
    return Path(current_tenant().storage_root)


def staging_dir(job: IngestJob) -> Path:
    return tenant_root() / ".staging" / str(job.pk)


def quarantine_dir(job: IngestJob) -> Path:
    return tenant_root() / ".quarantine" / str(job.pk)


def inside_tenant_root(path: Path | str) -> bool:
    """Whether a staged or quarantined file lies inside the active tenant's storage root. A row
    (e.g. restored from a crafted backup) may name any path: one outside is never touched."""
    try:
        resolve_inside(tenant_root(), path)
    except StoragePathError:
        return False
    return True


def instance_relative_path(parsed: ParsedInstance) -> str:
    """`<study>/<series>/<sop>.dcm`; the UIDs were validated ([0-9.], <= 64) by the parser."""
    return f"{parsed.study_instance_uid}/{parsed.series_instance_uid}/{parsed.sop_instance_uid}.dcm"


def instance_path(instance: Instance) -> Path:
    return resolve_inside(instance.medium.root, Path(instance.medium.root) / instance.relative_path)


# -- jobs and staging -------------------------------------------------------------------------


def ingest_job_create(*, source: str, created_by: Any = None, description: str = "") -> IngestJob:
    job = IngestJob.objects.create(
        source=source, created_by=created_by, description=description[:255]
    )
    staging_dir(job).mkdir(parents=True, exist_ok=True)
    return job


def ingest_item_stage(
    *, job: IngestJob, name: str, stream: IO[bytes] | Iterable[bytes], max_bytes: int | None = None
) -> IngestItem:
    """Copy one incoming file to the job's staging directory, streaming, size-limited."""
    limit = max_bytes or settings.PORTAL_MAX_INSTANCE_BYTES
    item = IngestItem.objects.create(job=job, name=name[:512])
    path = staging_dir(job) / f"{item.pk}.dcm"
    size = 0
    chunks: Iterable[bytes] = (
        iter(lambda: stream.read(CHUNK), b"") if hasattr(stream, "read") else stream
    )
    try:
        with path.open("wb") as out:
            for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise IngestRefused("too-large", f"The file is larger than {limit} bytes.")
                out.write(chunk)
    except IngestRefused as refused:
        path.unlink(missing_ok=True)
        _finish_item(item, ItemOutcome.REJECTED, refused.code, refused.message)
        return item
    except OSError as error:
        # A full or failing staging disk: the item is closed, so its job can close too.
        path.unlink(missing_ok=True)
        reason = f"The file could not be written to staging: {error.strerror or error}."
        _finish_item(item, ItemOutcome.REJECTED, "staging-failed", reason)
        raise
    IngestItem.objects.filter(pk=item.pk).update(staged_path=str(path), size_bytes=size)
    IngestJob.objects.filter(pk=job.pk).update(total=F("total") + 1)
    item.staged_path, item.size_bytes = str(path), size
    return item


def ingest_item_refuse(*, job: IngestJob, name: str, code: str, reason: str) -> IngestItem:
    """Record a file that was refused before it could be staged (e.g. an unsafe zip entry)."""
    item = IngestItem.objects.create(job=job, name=name[:512])
    _finish_item(item, ItemOutcome.REJECTED, code, reason)
    item.refresh_from_db()
    return item


def ingest_item_reject(*, item: IngestItem, code: str, reason: str) -> None:
    """Refuse a pending item before processing: a staged file goes to quarantine with the
    reason; an item whose staging broke off (no staged file) is just counted as rejected."""
    if not item.staged_path:
        _finish_item(item, ItemOutcome.REJECTED, code, reason)
        return
    _reject(item, Path(item.staged_path), IngestRefused(code, reason))


def _finish_item(item: IngestItem, outcome: str, code: str = "", reason: str = "") -> None:
    """Record a rejection that happened before processing (counts the item, too)."""
    IngestItem.objects.filter(pk=item.pk).update(
        outcome=outcome, reason_code=code, reason=reason, processed_at=timezone.now()
    )
    IngestJob.objects.filter(pk=item.job_id).update(
        total=F("total") + 1, rejected=F("rejected") + 1
    )


def ingest_job_submit(*, job: IngestJob, run_now: bool = False) -> IngestJob:
    """Receiving is over: process the pending items, by Celery (default) or right here."""
    from studies.tasks import ingest_batch

    IngestJob.objects.filter(pk=job.pk).update(status=IngestJobStatus.QUEUED)
    pending = list(job.items.filter(outcome=ItemOutcome.PENDING).values_list("pk", flat=True))
    if not pending:
        ingest_job_refresh(job_id=job.pk)
    elif run_now:
        for pk in pending:
            ingest_item_process(item_id=pk)
        ingest_job_refresh(job_id=job.pk)
    else:
        batches = [pending[i : i + BATCH_SIZE] for i in range(0, len(pending), BATCH_SIZE)]
        transaction.on_commit(
            lambda: [ingest_batch.delay(job_id=job.pk, item_ids=b) for b in batches]
        )
    job.refresh_from_db()
    return job


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
    shutil.rmtree(staging_dir(job), ignore_errors=True)
    return job


# -- processing one item ----------------------------------------------------------------------


def ingest_item_process(*, item_id: int) -> str:
    """Take one staged file into the archive. Safe to run again after any crash."""
    item = IngestItem.objects.select_related("job").get(pk=item_id)
    if item.outcome != ItemOutcome.PENDING:
        return item.outcome
    started, outcome = time.monotonic(), "error"
    try:
        outcome = _process_pending(item)
        return outcome
    finally:
        ingest_observe(source=item.job.source, outcome=outcome, seconds=time.monotonic() - started)


def _process_pending(item: IngestItem) -> str:
    staged = Path(item.staged_path)
    try:
        if item.staged_path and not inside_tenant_root(staged):
            raise IngestRefused(
                "staging-lost", "The staged file lies outside this tenant's storage; not touched."
            )
        if not staged.is_file():
            raise IngestRefused("staging-lost", "The uploaded file is missing from staging.")
        try:
            parsed = parse_file(staged, max_bytes=settings.PORTAL_MAX_INSTANCE_BYTES)
        except DicomParseError as error:
            raise IngestRefused(error.code, error.message) from None
        return _store(item, staged, parsed)
    except IngestRefused as refused:
        _reject(item, staged, refused)
        return ItemOutcome.REJECTED


def _reject(item: IngestItem, staged: Path, refused: IngestRefused) -> None:
    target = ""
    if inside_tenant_root(staged) and staged.is_file():
        folder = quarantine_dir(item.job)
        folder.mkdir(parents=True, exist_ok=True)
        safe = _UNSAFE_NAME.sub("_", Path(item.name).name)[-100:] or "file"
        destination = folder / f"{item.pk}-{safe}"
        os.replace(staged, destination)
        target = str(destination)
    with transaction.atomic():
        updated = IngestItem.objects.filter(pk=item.pk, outcome=ItemOutcome.PENDING).update(
            outcome=ItemOutcome.REJECTED,
            reason_code=refused.code,
            reason=refused.message,
            quarantine_path=target,
            processed_at=timezone.now(),
        )
        if updated:
            IngestJob.objects.filter(pk=item.job_id).update(rejected=F("rejected") + 1)


def _store(item: IngestItem, staged: Path, parsed: ParsedInstance) -> str:
    from configuration.selectors import tenant_settings

    relative = instance_relative_path(parsed)
    existing = (
        Instance.objects.select_related("medium")
        .filter(sop_instance_uid=parsed.sop_instance_uid)
        .first()
    )
    replace = tenant_settings().duplicate_policy == "replace"
    if existing is not None and not replace:
        with transaction.atomic():
            if IngestItem.objects.filter(pk=item.pk, outcome=ItemOutcome.PENDING).update(
                outcome=ItemOutcome.DUPLICATE,
                sop_instance_uid=parsed.sop_instance_uid,
                study_instance_uid=parsed.study_instance_uid,
                processed_at=timezone.now(),
                reason="An instance with this SOP Instance UID is already stored; "
                "the tenant keeps the first copy.",
            ):
                IngestJob.objects.filter(pk=item.job_id).update(duplicates=F("duplicates") + 1)
        staged.unlink(missing_ok=True)
        return ItemOutcome.DUPLICATE

    growth = staged.stat().st_size - (existing.size_bytes if existing else 0)
    _check_quota(growth)
    stored = _write_to_some_medium(staged, relative)
    outcome = ItemOutcome.REPLACED if existing else ItemOutcome.STORED
    old_file = instance_path(existing) if existing else None
    try:
        with transaction.atomic():
            item_row = IngestItem.objects.select_for_update().get(pk=item.pk)
            if item_row.outcome != ItemOutcome.PENDING:
                return item_row.outcome  # another worker finished it meanwhile
            new_series = _index(parsed, stored, existing)
            if new_series is not None:
                # Imported here: study_services imports this module.
                from studies.study_services import thumbnail_queue_for_new_series

                thumbnail_queue_for_new_series([new_series])
            item_row.outcome, item_row.processed_at = outcome, timezone.now()
            item_row.sop_instance_uid = parsed.sop_instance_uid
            item_row.study_instance_uid = parsed.study_instance_uid
            item_row.save(
                update_fields=["outcome", "processed_at", "sop_instance_uid", "study_instance_uid"]
            )
            IngestJob.objects.filter(pk=item.job_id).update(stored=F("stored") + 1)
            StorageMedium.objects.filter(pk=stored.medium.pk).update(
                used_bytes=F("used_bytes") + stored.size
            )
    except Exception:
        # The row never committed: the new file would be an orphan unless an earlier
        # instance row points at the very same path (a replace on the same medium).
        new_path = Path(stored.medium.root) / stored.relative_path
        if old_file is None or old_file != new_path:
            new_path.unlink(missing_ok=True)
        raise
    staged.unlink(missing_ok=True)
    new_path = Path(stored.medium.root) / stored.relative_path
    if old_file is not None and old_file != new_path:
        old_file.unlink(missing_ok=True)
    return outcome


def _check_quota(growth: int) -> None:
    quota = current_tenant().quota_bytes
    # The media's usage (measured by the storage-usage job, kept current by every store,
    # move and delete): a handful of rows, where summing every study cost 30-45 ms per
    # instance at 100,000 studies (BENCHMARKS.md).
    used = StorageMedium.objects.aggregate(total=Sum("used_bytes"))["total"] or 0
    if growth > 0 and used + growth > quota:
        raise IngestRefused(
            "quota",
            f"The tenant's storage quota ({quota} bytes) is used up: {used} bytes are "
            f"stored and this file needs {growth} more. Nothing was stored; the file "
            "is kept in quarantine.",
        )


def writable_media(size: int) -> Iterator[StorageMedium]:
    """Online filesystem media by priority, each only while below its high watermark."""
    media = StorageMedium.objects.filter(
        status=MediumStatus.ONLINE, kind=MediumKind.FILESYSTEM
    ).order_by("-priority", "pk")
    for medium in media:
        if (medium.used_bytes + size) * 100 <= medium.capacity_bytes * medium.high_watermark:
            yield medium


def _write_to_some_medium(staged: Path, relative: str) -> StoredFile:
    size = staged.stat().st_size
    failures = []
    for medium in writable_media(size):
        try:
            return _write_atomically(staged, medium, relative)
        except OSError as error:
            failures.append(f"{medium.name}: {error.strerror or error}")
            logger.warning("medium %s failed a write: %s", medium.name, error)
    detail = "; ".join(failures) if failures else "every online medium is full or offline"
    raise IngestRefused(
        "no-medium",
        f"No storage medium could take the file ({detail}). The file is kept in quarantine.",
    )


def _write_atomically(staged: Path, medium: StorageMedium, relative: str) -> StoredFile:
    """Copy with SHA-256 to a temp file beside the target, fsync, rename, fsync the folder."""
    target = resolve_inside(medium.root, Path(medium.root) / relative)
    target.parent.mkdir(parents=True, exist_ok=True)
    # One temp name per target: a worker killed mid-copy leaves a file that the retry
    # overwrites, instead of an orphan under a random name. Concurrent writers copy the
    # same staged bytes, so either rename leaves a whole file.
    temp = target.parent / f".{target.name}.tmp"
    digest = hashlib.sha256()
    size = 0
    try:
        with staged.open("rb") as source, temp.open("wb") as out:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return StoredFile(medium=medium, relative_path=relative, size=size, sha256=digest.hexdigest())


def _index(parsed: ParsedInstance, stored: StoredFile, existing: Instance | None) -> int | None:
    """Upsert patient, study, series and instance; counters change under the study's lock.

    Returns the id of the series this instance created, if it created one."""
    patient, _ = Patient.objects.get_or_create(
        patient_id=parsed.patient_id,
        name=parsed.patient_name,
        birth_date=parsed.patient_birth_date,
        defaults={"sex": parsed.patient_sex},
    )
    study, _ = Study.objects.get_or_create(
        study_instance_uid=parsed.study_instance_uid,
        defaults={
            "patient_record": patient,
            "patient_name": parsed.patient_name,
            "patient_id": parsed.patient_id,
            "patient_sex": parsed.patient_sex,
            "patient_birth_date": parsed.patient_birth_date,
            "study_date": parsed.study_date,
            "study_time": parsed.study_time,
            "accession_number": parsed.accession_number,
            "study_id": parsed.study_id,
            "description": parsed.study_description,
            "referring_physician_name": parsed.referring_physician_name,
        },
    )
    study = Study.objects.select_for_update().get(pk=study.pk)
    series, series_created = Series.objects.get_or_create(
        series_instance_uid=parsed.series_instance_uid,
        defaults={
            "study": study,
            "modality": parsed.modality,
            "series_number": parsed.series_number,
            "description": parsed.series_description,
            "body_part_examined": parsed.body_part_examined,
        },
    )
    fields = {
        "sop_class_uid": parsed.sop_class_uid,
        "transfer_syntax_uid": parsed.transfer_syntax_uid,
        "instance_number": parsed.instance_number,
        "rows": parsed.rows,
        "columns": parsed.columns,
        "number_of_frames": parsed.number_of_frames,
        "bits_allocated": parsed.bits_allocated,
        "medium": stored.medium,
        "relative_path": stored.relative_path,
        "size_bytes": stored.size,
        "sha256": stored.sha256,
        "series": series,
    }
    if existing is None:
        Instance.objects.create(sop_instance_uid=parsed.sop_instance_uid, **fields)
        added, grown = 1, stored.size
    else:
        Instance.objects.filter(pk=existing.pk).update(**fields)
        added, grown = 0, stored.size - existing.size_bytes
    Series.objects.filter(pk=series.pk).update(
        num_instances=F("num_instances") + added, size_bytes=F("size_bytes") + grown
    )
    if parsed.modality and parsed.modality not in study.modalities:
        study.modalities = [*study.modalities, parsed.modality]
    study.num_series += 1 if series_created else 0
    study.num_instances += added
    study.size_bytes += grown
    study.save(
        update_fields=["modalities", "num_series", "num_instances", "size_bytes", "updated_at"]
    )
    return series.pk if series_created else None
