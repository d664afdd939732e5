"""The singleton's periodic work on the active tenant's archive; every service is safe to re-run."""

import logging
import os
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Q
from django.http import HttpRequest
from django.utils import timezone

from audit.services import audit_record
from configuration.models import RetentionRule
from configuration.validators import ALL_MODALITIES
from studies.index.services import study_delete
from studies.ingest import Refusal, ingest_job_submit
from studies.media.objectstore import ObjectMissing, ObjectStore, StoredObject
from studies.models import (
    IngestItem,
    IngestJob,
    IngestJobStatus,
    Instance,
    ItemOutcome,
    MediumKind,
    MediumStatus,
    StorageMedium,
    Study,
)
from studies.storage import (
    StoragePathError,
    file_sha256,
    inside_tenant_root,
    instance_path,
    instance_remove,
    resolve_inside,
    staging_dir,
    tenant_root,
    write_atomically,
)

logger = logging.getLogger(__name__)

SYSTEM_ACTOR = "system (retention job)"
DETAILS_CAP = 100
DEFAULT_BATCH_LIMIT = 1000


def batch_limit() -> int:
    """Items one tenant's run may process, so a backlog cannot starve the other tenants."""
    return int(getattr(settings, "PORTAL_JOB_BATCH_LIMIT", DEFAULT_BATCH_LIMIT))


# -- watermark migration ----------------------------------------------------------------------


def _above(medium: StorageMedium, percent: int) -> bool:
    return medium.used_bytes * 100 >= medium.capacity_bytes * percent


def _destination(source: StorageMedium, size: int) -> StorageMedium | None:
    """The first online medium after `source` by priority that stays below its high mark."""
    candidates = (
        StorageMedium.objects.filter(status=MediumStatus.ONLINE)
        .exclude(pk=source.pk)
        .order_by("-priority", "pk")
    )
    for medium in candidates:
        if _has_room(medium, size):
            return medium
    return None


def _has_room(medium: StorageMedium, size: int) -> bool:
    return (medium.used_bytes + size) * 100 < medium.capacity_bytes * medium.high_watermark


def _instances_oldest_first(medium: StorageMedium) -> Iterator[Instance]:
    return (
        Instance.objects.filter(medium=medium)
        .select_related("medium")
        .order_by("series__study__received_at", "series__study_id", "pk")
        .iterator(chunk_size=200)
    )


def _copy_verified(instance: Instance, destination: StorageMedium) -> Any:
    """Copy the instance's bytes to `destination` under its relative name and read them back
    there; returns what removes the copy, or None (and no copy) if they do not match."""
    source = instance_path(instance)  # object storage: a copy checked against the index
    relative = instance.relative_path
    if destination.kind == MediumKind.S3:
        store = ObjectStore(destination)
        store.put_file(source, relative, sha256=instance.sha256, size=instance.size_bytes)
        copy: Any = StoredObject(store, relative)
        try:
            matches = store.sha256(relative) == instance.sha256
        except OSError:
            copy.unlink()
            raise
    else:
        copied = write_atomically(source, destination.root, relative)
        copy = Path(destination.root) / relative
        matches = copied.sha256 == instance.sha256 and file_sha256(copy) == instance.sha256
    if not matches:
        copy.unlink(missing_ok=True)
        return None
    return copy


def instance_move(*, instance: Instance, destination: StorageMedium) -> bool:
    """Copy one file to `destination` (a disk or a bucket, either way), verify its SHA-256
    there, repoint the index, then delete the source. Returns False (and changes nothing)
    if the copy does not match the index."""
    copy = _copy_verified(instance, destination)
    if copy is None:
        return False
    try:
        with transaction.atomic():
            moved = Instance.objects.filter(
                pk=instance.pk, medium=instance.medium, relative_path=instance.relative_path
            ).update(medium=destination)
            if not moved:  # replaced or deleted meanwhile: the copy belongs to nobody
                raise Instance.DoesNotExist
            StorageMedium.objects.filter(pk=instance.medium_id).update(
                used_bytes=F("used_bytes") - instance.size_bytes
            )
            StorageMedium.objects.filter(pk=destination.pk).update(
                used_bytes=F("used_bytes") + instance.size_bytes
            )
    except Instance.DoesNotExist:
        copy.unlink(missing_ok=True)
        return False
    except BaseException:
        copy.unlink(missing_ok=True)
        raise
    try:
        instance_remove(instance)
    except OSError:
        logger.warning("moved %s; its old copy stays until verification finds it", instance)
    return True


def media_migrate_watermarks(*, limit: int | None = None) -> dict[str, Any]:
    """Move the oldest studies off each online medium above its high watermark, file by
    file, to the next online medium with room, until the source is below its low mark."""
    limit = batch_limit() if limit is None else limit
    counts: dict[str, Any] = {"media": 0, "moved": 0, "bytes": 0, "skipped": 0, "stuck": 0}
    sources = StorageMedium.objects.filter(status=MediumStatus.ONLINE).order_by("-priority", "pk")
    for source in sources:
        if not _above(source, source.high_watermark):
            continue
        counts["media"] += 1
        moved_before = counts["moved"]
        for instance in _instances_oldest_first(source):
            source.refresh_from_db(fields=["used_bytes"])
            done = counts["moved"] + counts["skipped"] >= limit
            if done or not _above(source, source.low_watermark):
                break
            destination = _destination(source, instance.size_bytes)
            if destination is None:
                counts["stuck"] += 1
                logger.warning("medium %s is above its watermark; no medium has room", source)
                break
            try:
                ok = instance_move(instance=instance, destination=destination)
            except (OSError, StoragePathError) as error:
                logger.warning("moving %s failed: %s", instance, error)
                ok = False
            if ok:
                counts["moved"] += 1
                counts["bytes"] += instance.size_bytes
            else:
                counts["skipped"] += 1
        if counts["moved"] > moved_before:
            with transaction.atomic():
                audit_record(
                    action="medium.migrate",
                    actor_name="system (watermark job)",
                    target=source,
                    details={"files": counts["moved"] - moved_before},
                )
    return counts


# -- retention --------------------------------------------------------------------------------


def retention_apply(*, limit: int | None = None) -> dict[str, Any]:
    """Delete the studies past each enabled rule; a study is kept until it is strictly older."""
    limit = batch_limit() if limit is None else limit
    counts: dict[str, Any] = {"rules": 0, "deleted": 0, "bytes": 0}
    now = timezone.now()
    for rule in RetentionRule.objects.filter(enabled=True).order_by("modality"):
        counts["rules"] += 1
        cutoff = now - timedelta(days=rule.days)
        studies = Study.objects.filter(received_at__lt=cutoff).order_by("received_at", "pk")
        if rule.modality != ALL_MODALITIES:
            studies = studies.filter(modalities__contains=[rule.modality])
        for study_id in studies.values_list("pk", flat=True)[: max(limit - counts["deleted"], 0)]:
            with transaction.atomic():
                study = Study.objects.select_for_update().filter(pk=study_id).first()
                if study is None or study.received_at >= cutoff:
                    continue
                details: dict[str, Any] = {
                    "study_instance_uid": study.study_instance_uid,
                    "patient_id": study.patient_id,
                    "modalities": study.modalities,
                    "received_at": study.received_at.isoformat(),
                    "instances": study.num_instances,
                    "bytes": study.size_bytes,
                    "rule": {"modality": rule.modality, "days": rule.days},
                }
                study_delete(study=study)
                audit_record(
                    action="retention.delete",
                    actor_name=SYSTEM_ACTOR,
                    object_type="study",
                    object_id=details["study_instance_uid"],
                    details=details,
                )
            counts["deleted"] += 1
            counts["bytes"] += details["bytes"]
    return counts


# -- verification -----------------------------------------------------------------------------

PROBLEMS = ("missing", "size_mismatch", "checksum_mismatch", "orphans", "unreadable")


def _ignored(name: str) -> bool:
    """Our own bookkeeping on a medium: dot entries (.thumbnails, .staging, temp files)."""
    return name.startswith(".") or name.endswith(".tmp")


def _files_on_disk(root: Path) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not _ignored(d)]
        for filename in filenames:
            if not _ignored(filename):
                yield os.path.relpath(os.path.join(dirpath, filename), root)


def _stored_size_and_digest(medium: StorageMedium, relative: str) -> tuple[int, Any]:
    """The stored file's size now, and how to hash it (read only if the size matched)."""
    if medium.kind == MediumKind.S3:
        store = ObjectStore(medium)
        stat = store.stat(relative)
        if stat is None:
            raise ObjectMissing(relative)
        return stat.size, lambda: store.sha256(relative)
    path = resolve_inside(medium.root, Path(medium.root) / relative)
    return path.stat().st_size, lambda: file_sha256(path)


def _stored_names(medium: StorageMedium) -> Iterator[str]:
    if medium.kind == MediumKind.S3:
        for relative, _size in ObjectStore(medium).walk():
            if not _ignored(relative.rsplit("/", 1)[-1]):
                yield relative
        return
    yield from _files_on_disk(Path(medium.root))


def storage_verify(*, after_id: int = 0, limit: int | None = None) -> dict[str, Any]:
    """Compare the index with the files both ways, per medium; nothing is changed.

    Checks at most `limit` instances with ids above `after_id`; `cursor` in the answer is
    where the next run continues (0 once the pass is complete). Orphans are looked for at
    the start of each pass.
    """
    limit = batch_limit() if limit is None else limit
    report: dict[str, Any] = {"checked": 0, **dict.fromkeys(PROBLEMS, 0), "cursor": 0}
    media: dict[str, dict[str, int]] = {}
    details: list[dict[str, str]] = []

    def found(medium: StorageMedium, problem: str, path: str, note: str = "") -> None:
        media[medium.name][problem] += 1
        report[problem] += 1
        if len(details) < DETAILS_CAP:
            details.append({"medium": medium.name, "problem": problem, "path": path, "note": note})

    checkable = StorageMedium.objects.exclude(
        status__in=[MediumStatus.OFFLINE, MediumStatus.RETIRED]
    )
    by_pk = {medium.pk: medium for medium in checkable}
    for medium in by_pk.values():
        media[medium.name] = {"checked": 0, **dict.fromkeys(PROBLEMS, 0)}
    instances = (
        Instance.objects.filter(pk__gt=after_id, medium_id__in=by_pk)
        .order_by("pk")
        .values_list("pk", "medium_id", "relative_path", "size_bytes", "sha256")[: limit + 1]
    )
    batch = list(instances)
    last = 0
    for pk, medium_id, relative, size, sha in batch[:limit]:
        medium, last = by_pk[medium_id], pk
        media[medium.name]["checked"] += 1
        report["checked"] += 1
        try:
            actual, digest = _stored_size_and_digest(medium, relative)
        except ObjectMissing:
            found(medium, "missing", relative)
            continue
        except (OSError, StoragePathError) as error:
            if medium.kind == MediumKind.S3:  # the endpoint failed: not a verdict on the file
                found(medium, "unreadable", relative, str(error)[:200])
            else:
                found(medium, "missing", relative)
            continue
        if actual != size:
            found(medium, "size_mismatch", relative, f"index {size} bytes, file {actual}")
        elif digest() != sha:
            found(medium, "checksum_mismatch", relative)
    report["cursor"] = last if len(batch) > limit else 0
    if after_id == 0:
        for medium in by_pk.values():
            indexed = set(
                Instance.objects.filter(medium=medium).values_list("relative_path", flat=True)
            )
            try:
                for relative in _stored_names(medium):
                    if relative not in indexed:
                        found(medium, "orphans", relative)
            except OSError as error:
                found(medium, "unreadable", "", str(error)[:200])
    report["media"], report["details"] = media, details
    return report


# -- quarantine -------------------------------------------------------------------------------


def quarantine_purge(*, older_than_days: int = 30, limit: int | None = None) -> dict[str, Any]:
    """Delete quarantined files older than `older_than_days` and forget where they were."""
    limit = batch_limit() if limit is None else limit
    counts: dict[str, Any] = {"deleted": 0, "bytes": 0}
    folder = tenant_root() / ".quarantine"
    if not folder.is_dir():
        return counts
    cutoff = time.time() - older_than_days * 86400
    for dirpath, _dirnames, filenames in os.walk(folder):
        for filename in filenames:
            if counts["deleted"] >= limit:
                break
            path = Path(dirpath) / filename
            try:
                stat = path.lstat()
            except FileNotFoundError:
                continue
            if stat.st_mtime >= cutoff:
                continue
            with transaction.atomic():
                IngestItem.objects.filter(quarantine_path=str(path)).update(
                    quarantine_path="", kept_bytes=0
                )
                transaction.on_commit(lambda p=path: p.unlink(missing_ok=True))  # type: ignore[misc]
            counts["deleted"] += 1
            counts["bytes"] += stat.st_size
    for dirpath, _dirnames, _filenames in os.walk(folder, topdown=False):
        if Path(dirpath) != folder:
            try:
                os.rmdir(dirpath)
            except OSError:
                continue  # still holds younger files
    if counts["deleted"]:
        with transaction.atomic():
            audit_record(
                action="quarantine.purge",
                actor_name="system (quarantine job)",
                object_type="quarantine",
                details={**counts, "older_than_days": older_than_days},
            )
    return counts


# -- retry of an ingest job -------------------------------------------------------------------

# Rejections that say nothing about the file itself: once space is freed it may go in.
RETRYABLE_REASONS = (Refusal.QUOTA, Refusal.NO_MEDIUM)


def retryable_items() -> Q:
    """The items of a failed job that a retry would queue again: the pending ones, and those
    refused for lack of space whose bytes are still in quarantine."""
    refused_for_space = Q(outcome=ItemOutcome.REJECTED, reason_code__in=RETRYABLE_REASONS)
    return Q(outcome=ItemOutcome.PENDING) | (refused_for_space & ~Q(quarantine_path=""))


def ingest_job_retry(*, job: IngestJob, request: HttpRequest | None = None) -> int:
    """Queue a failed job's files again: its pending ones, and those refused for lack of
    space (moved back from quarantine to staging). Returns how many were queued."""
    with transaction.atomic():
        current = IngestJob.objects.select_for_update().get(pk=job.pk)
        if current.status != IngestJobStatus.FAILED:
            raise ValidationError("Only failed ingest jobs can be retried; this one is not failed.")
        pending = current.items.filter(outcome=ItemOutcome.PENDING).count()
        retryable = list(
            current.items.filter(retryable_items()).exclude(outcome=ItemOutcome.PENDING)
        )
        folder = staging_dir(current.pk)
        folder.mkdir(parents=True, exist_ok=True)
        requeued = 0
        for item in retryable:
            staged = folder / f"{item.pk}.dcm"
            if not inside_tenant_root(item.quarantine_path):
                logger.warning("item %s: quarantine path outside the tenant's storage", item.pk)
                continue  # never move a file from outside the tenant's root: the rejection stands
            try:
                os.replace(item.quarantine_path, staged)
            except OSError:
                continue  # purged meanwhile: the rejection stands
            IngestItem.objects.filter(pk=item.pk).update(
                outcome=ItemOutcome.PENDING,
                reason="",
                reason_code="",
                quarantine_path="",
                kept_bytes=0,
                staged_path=str(staged),
                processed_at=None,
                attempts=0,
            )
            requeued += 1
        if not pending and not requeued:
            raise ValidationError(
                "Nothing to retry: every file was rejected for a reason a retry cannot change."
            )
        IngestJob.objects.filter(pk=current.pk).update(
            status=IngestJobStatus.QUEUED,
            rejected=F("rejected") - requeued,
            error="",
            finished_at=None,
        )
        audit_record(
            action="ingest.retry",
            request=request,
            target=current,
            details={"pending": pending, "from_quarantine": requeued},
        )
        ingest_job_submit(job=current)
    return pending + requeued
