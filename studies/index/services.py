"""Writes on the study index: deleting a study, making series thumbnails, downloading a zip."""

import contextlib
import logging
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Greatest
from django.http import HttpRequest

from audit.services import audit_record
from studies.index import selectors
from studies.index.thumbnails import ThumbnailError, render_thumbnail, write_thumbnail
from studies.models import Instance, MediumKind, Series, StorageMedium, Study
from studies.storage import (
    StoragePathError,
    instance_chunks,
    instance_file,
    instance_path,
    instance_remove,
    resolve_inside,
    tenant_root,
)

logger = logging.getLogger(__name__)

THUMBNAIL_DIR = ".thumbnails"
THUMBNAIL_SIZE = 128


# -- view -------------------------------------------------------------------------------------


def study_view_record(
    *, study: Study, request: HttpRequest | None = None, actor: Any = None
) -> None:
    """Who looked at which study: viewing patient data is audited like changing it."""
    with transaction.atomic():
        audit_record(action="study.view", request=request, actor=actor, target=study)


# -- delete -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyDeletion:
    study_instance_uid: str
    series: int
    instances: int
    bytes: int


def study_delete(
    *, study: Study, request: HttpRequest | None = None, actor: Any = None
) -> StudyDeletion:
    """Remove the study's rows in one transaction and its files (and thumbnails) after commit."""
    with transaction.atomic():
        study = Study.objects.select_for_update().get(pk=study.pk)
        instances = list(Instance.objects.filter(series__study=study).select_related("medium"))
        series = list(Series.objects.filter(study=study))
        on_disk = [i for i in instances if i.medium.kind != MediumKind.S3]
        objects = [i for i in instances if i.medium.kind == MediumKind.S3]
        files = [_quietly(instance_file, instance) for instance in on_disk]
        files += [_thumbnail_file(s.thumbnail) for s in series if s.thumbnail]
        freed: dict[int, tuple[int, int]] = {}
        for instance in instances:
            size, count = freed.get(instance.medium_id, (0, 0))
            freed[instance.medium_id] = (size + instance.size_bytes, count + 1)
        for medium_id, (size, count) in freed.items():
            StorageMedium.objects.filter(pk=medium_id).update(
                used_bytes=Greatest(F("used_bytes") - size, Value(0)),
                file_count=Greatest(F("file_count") - count, Value(0)),
            )
        patient = study.patient_record
        deletion = StudyDeletion(
            study_instance_uid=study.study_instance_uid,
            series=len(series),
            instances=len(instances),
            bytes=sum(instance.size_bytes for instance in instances),
        )
        study.delete()
        if not patient.studies.exists():
            patient.delete()
        audit_record(
            action="study.delete",
            request=request,
            actor=actor,
            object_type="study",
            object_id=deletion.study_instance_uid,
            details={
                "patient_id": study.patient_id,
                "series": deletion.series,
                "instances": deletion.instances,
                "bytes": deletion.bytes,
            },
        )
        roots = {instance.medium.root for instance in on_disk}
        transaction.on_commit(lambda: _remove_files([f for f in files if f], roots))
        transaction.on_commit(lambda: _remove_objects(objects))
    return deletion


def _remove_objects(instances: list[Instance]) -> None:
    """Delete the objects of removed rows (and their cached copies); one that fails is
    logged and found again by verification as an object no row names."""
    for instance in instances:
        try:
            instance_remove(instance)
        except OSError:
            logger.exception("could not remove the object of instance %s", instance.pk)


def _quietly(function: Any, *args: Any) -> Path | None:
    try:
        path: Path = function(*args)
    except StoragePathError:
        logger.warning("not removing a file outside its medium: %s", args)
        return None
    return path


def _thumbnail_file(relative: str) -> Path | None:
    return _quietly(lambda: resolve_inside(tenant_root(), tenant_root() / relative))


def _remove_files(files: Iterable[Path], roots: Iterable[str]) -> None:
    """Unlink the files, then the directories they leave empty (never a medium's root)."""
    keep = {Path(root).resolve() for root in roots} | {tenant_root().resolve()}
    parents: set[Path] = set()
    for path in files:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            logger.exception("could not remove %s", path)
        parents.update(
            p for p in path.parents if p not in keep and any(k in p.parents for k in keep)
        )
    for directory in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        # Not empty (or already gone): another study or series still lives there.
        with contextlib.suppress(OSError):
            directory.rmdir()


# -- thumbnails -------------------------------------------------------------------------------


def series_thumbnail_make(*, series_id: int) -> Series | None:
    """Render the middle instance of the series to `<tenant root>/.thumbnails/<uid>.png`.

    Safe to re-run: it overwrites the PNG and records either its path or the reason it could
    not be made. A thumbnail is derived data, so no audit row.
    """
    series = Series.objects.filter(pk=series_id).first()
    if series is None:
        return None
    instance = selectors.series_middle_instance(series=series)
    if instance is None:
        return series
    relative = f"{THUMBNAIL_DIR}/{series.series_instance_uid}.png"
    try:
        png = render_thumbnail(instance_path(instance), size=THUMBNAIL_SIZE)
    except (ThumbnailError, StoragePathError, OSError) as error:
        reason = error.reason if isinstance(error, ThumbnailError) else "The file is not readable."
        series.thumbnail, series.thumbnail_error = "", reason[:255]
    else:
        write_thumbnail(png, tenant_root() / relative)
        series.thumbnail, series.thumbnail_error = relative, ""
    Series.objects.filter(pk=series.pk).update(
        thumbnail=series.thumbnail, thumbnail_error=series.thumbnail_error
    )
    return series


def series_thumbnail_file(*, series: Series) -> Path | None:
    """The series' PNG if it exists inside the tenant root."""
    if not series.thumbnail:
        return None
    path = _thumbnail_file(series.thumbnail)
    return path if path is not None and path.is_file() else None


def thumbnail_queue_for_new_series(series_ids: Iterable[int]) -> None:
    """Queue a thumbnail for each series after the current transaction commits.

    The ingest pipeline calls this with the ids of series that got their first instance.
    """
    from studies.tasks import make_series_thumbnail

    for series_id in series_ids:
        transaction.on_commit(
            lambda series_id=series_id: make_series_thumbnail.delay(series_id)  # type: ignore[misc]
        )


def thumbnail_cheap_to_make(*, series: Series) -> bool:
    """Whether the page may render the thumbnail while the user waits (small files only)."""
    limit = getattr(settings, "PORTAL_INLINE_THUMBNAIL_BYTES", 4 << 20)
    return 0 < series.size_bytes // max(series.num_instances, 1) <= limit


# -- download ---------------------------------------------------------------------------------


class _Pipe:
    """A write-only file object whose bytes are taken out by the generator that drives it."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.position = 0

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.chunks = b"".join(self.chunks), []
        return data


def study_zip_entries(*, study: Study) -> list[tuple[str, Instance]]:
    """(name in the zip, instance) of every instance of the study, in reading order."""
    instances = (
        Instance.objects.filter(series__study=study)
        .select_related("medium", "series")
        .order_by("series__series_number", "series__series_instance_uid", "instance_number", "pk")
    )
    return [(f"{i.series.series_instance_uid}/{i.sop_instance_uid}.dcm", i) for i in instances]


def study_download(
    *, study: Study, request: HttpRequest | None = None, actor: Any = None
) -> Iterator[bytes]:
    """Audit the download and return the zip's bytes as a stream; files are read lazily."""
    return studies_download(studies=[study], request=request, actor=actor, folders=False)


def studies_download(
    *,
    studies: list[Study],
    request: HttpRequest | None = None,
    actor: Any = None,
    folders: bool = True,
) -> Iterator[bytes]:
    """One zip of several studies, a folder each (named by Study Instance UID); each study's
    download audited as if it were downloaded alone."""
    entries: list[tuple[str, Instance]] = []
    with transaction.atomic():
        for study in studies:
            own = study_zip_entries(study=study)
            prefix = f"{study.study_instance_uid}/" if folders else ""
            entries += [(prefix + name, instance) for name, instance in own]
            audit_record(
                action="study.download",
                request=request,
                actor=actor,
                target=study,
                details={"study_instance_uid": study.study_instance_uid, "instances": len(own)},
            )
    return zip_stream(entries)


def zip_stream(entries: list[tuple[str, Instance]]) -> Iterator[bytes]:
    """A stored (uncompressed) zip written chunk by chunk from whichever medium holds each
    instance; never the whole archive, nor a whole object, in memory."""
    return (chunk for chunk in _zip_chunks(entries) if chunk)


def _zip_chunks(entries: list[tuple[str, Instance]]) -> Iterator[bytes]:
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, mode="w", compression=zipfile.ZIP_STORED) as archive:
        for name, instance in entries:
            source = instance_chunks(instance)
            try:
                first = next(source, b"")
            except (OSError, StoragePathError) as error:
                logger.warning("download: instance %s left out: %s", instance.pk, error)
                continue
            with archive.open(name, mode="w", force_zip64=True) as entry:
                entry.write(first)
                yield pipe.take()
                for chunk in source:
                    entry.write(chunk)
                    yield pipe.take()
            yield pipe.take()
    yield pipe.take()
