"""Where the tenant's files live and how they are written: the one module every reader and
writer of archive files uses (ingest, WADO, C-MOVE/C-GET, maintenance, deletion).

Layout below a medium's root: `<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`.
Below the tenant's allowed root, `.staging/<job>/` holds received files until they are
processed and `.quarantine/<job>/` the refused ones. Every path is checked for containment
after resolving (symlinks and `..` included).

Durable writes: a file's bytes are fsynced once, where they are first written (staging);
placing it on a medium is a hard link when staging and medium share a filesystem (a copy,
hashed and fsynced, when they do not), and the directories a batch touched are fsynced once.
"""

import errno
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

CHUNK = 1 << 20


class StoragePathError(ValueError):
    """A path that would leave the directory it must stay in."""


class StagingLimitExceeded(Exception):
    """The bytes being received passed their size limit; nothing was kept."""

    def __init__(self, limit: int):
        super().__init__(f"larger than {limit} bytes")
        self.limit = limit


def resolve_inside(root: Path | str, candidate: Path | str, *, root_resolved: bool = False) -> Path:
    """`candidate` resolved (symlinks and `..` included), refused unless it lies inside `root`
    (`root_resolved`: the caller resolved `root` already, once for many candidates)."""
    base = Path(root) if root_resolved else Path(root).resolve()
    resolved = Path(candidate).resolve()
    if resolved != base and base not in resolved.parents:
        raise StoragePathError(f"{candidate} is outside {base}")
    return resolved


def is_inside(root: Path | str, candidate: Path | str, *, root_resolved: bool = False) -> bool:
    try:
        resolve_inside(root, candidate, root_resolved=root_resolved)
    except StoragePathError:
        return False
    return True


# -- the tenant's layout ----------------------------------------------------------------------


def tenant_root() -> Path:
    """The active tenant's allowed storage root."""
    from portal.schemas import current_tenant

    return Path(current_tenant().storage_root)


def staging_dir(job_id: int) -> Path:
    return tenant_root() / ".staging" / str(job_id)


def quarantine_dir(job_id: int) -> Path:
    return tenant_root() / ".quarantine" / str(job_id)


def inside_tenant_root(path: Path | str) -> bool:
    """Whether a staged or quarantined file lies inside the active tenant's storage root. A row
    (e.g. restored from a crafted backup) may name any path: one outside is never touched."""
    return is_inside(tenant_root(), path)


def instance_relative_path(*, study_uid: str, series_uid: str, sop_uid: str) -> str:
    """`<study>/<series>/<sop>.dcm`; the UIDs were validated ([0-9.], <= 64) by the parser."""
    return f"{study_uid}/{series_uid}/{sop_uid}.dcm"


def instance_path(instance: Any) -> Path:
    """A local file with an indexed instance's bytes (a row with `medium`, `relative_path`,
    `size_bytes` and `sha256`): the file itself on a filesystem medium, a verified copy in
    the tenant's cache for object storage (`studies/media/objectstore.py`). Only for reading:
    `instance_remove` deletes."""
    if instance.medium.kind == "s3":
        from studies.media.objectstore import cached_copy

        return cached_copy(instance)
    return instance_file(instance)


def instance_file(instance: Any) -> Path:
    """The file of an instance on a filesystem medium, checked to lie inside the medium."""
    root = instance.medium.root
    return resolve_inside(root, Path(root) / instance.relative_path)


def instance_chunks(instance: Any, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
    """The instance's stored bytes from `offset` as a stream, from whichever medium holds it."""
    if instance.medium.kind == "s3":
        from studies.media.objectstore import store_for

        yield from store_for(instance.medium).chunks(instance.relative_path, offset, length)
        return
    remaining = length
    with instance_file(instance).open("rb") as source:
        source.seek(offset)
        while remaining is None or remaining > 0:
            chunk = source.read(CHUNK if remaining is None else min(CHUNK, remaining))
            if not chunk:
                if remaining:
                    raise OSError(f"{instance.relative_path} is shorter than it was")
                return
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk


def medium_remove(medium: Any, relative: str) -> None:
    """Delete a stored file by its medium and relative name (missing is fine)."""
    if medium.kind == "s3":
        from studies.media.objectstore import store_for

        store_for(medium).delete(relative)
        return
    root = medium.root
    resolve_inside(root, Path(root) / relative).unlink(missing_ok=True)


def instance_remove(instance: Any) -> None:
    """Delete an instance's stored file (and a cached copy of it)."""
    medium_remove(instance.medium, instance.relative_path)
    if instance.medium.kind == "s3":
        from studies.media.objectstore import cache_drop

        cache_drop(instance)


# -- durable writes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WrittenFile:
    path: Path
    size: int
    sha256: str


def fsync_directory(path: Path | str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_directories(paths: Iterable[Path]) -> None:
    """Each distinct directory once: what makes a batch's renames and links durable."""
    for directory in sorted(set(paths)):
        fsync_directory(directory)


def write_stream(
    path: Path, chunks: Iterable[bytes] | IO[bytes], *, limit: int | None = None
) -> WrittenFile:
    """Write `chunks` to a new file at `path`, hashing as it goes, fsynced; a stream over
    `limit` bytes is cut off and removed (`StagingLimitExceeded`), as is one that fails."""
    if hasattr(chunks, "read"):
        stream = chunks
        chunks = iter(lambda: stream.read(CHUNK), b"")
    digest, size = hashlib.sha256(), 0
    try:
        with path.open("xb") as out:
            for chunk in chunks:
                size += len(chunk)
                if limit is not None and size > limit:
                    raise StagingLimitExceeded(limit)
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return WrittenFile(path=path, size=size, sha256=digest.hexdigest())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _temp_beside(target: Path) -> Path:
    # One temp name per target: a process killed mid-write leaves a file that the retry
    # overwrites, instead of an orphan under a random name.
    return target.parent / f".{target.name}.tmp"


def copy_durably(source: Path, target: Path) -> WrittenFile:
    """Copy with SHA-256 to a temp file beside `target`, fsync, rename. The caller fsyncs
    `target.parent` (once per batch)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_beside(target)
    digest, size = hashlib.sha256(), 0
    try:
        with source.open("rb") as stream, temp.open("wb") as out:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return WrittenFile(path=target, size=size, sha256=digest.hexdigest())


def place_new_file(source: Path, target: Path) -> None:
    """Put the already durable `source` at `target` too, which must not exist yet
    (`FileExistsError`): a file that is there is never overwritten. A hard link (no bytes
    written) on one filesystem, a copy across filesystems. The caller fsyncs
    `target.parent` (once per batch) and removes `source` when it no longer needs it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
        return
    except FileExistsError:
        raise
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
    temp = _temp_beside(target)
    try:
        copy_durably(source, temp)
        os.link(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def replace_orphan(source: Path, target: Path) -> None:
    """Replace a file no index row points at (left by a crashed run) with `source`'s bytes,
    atomically: a link (or durable copy) beside it, renamed over it."""
    temp = _temp_beside(target)
    temp.unlink(missing_ok=True)
    try:
        try:
            os.link(source, temp)
        except OSError as error:
            if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            copy_durably(source, temp)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def keep_head(source: Path, target: Path, *, limit: int) -> None:
    """Write the first `limit` bytes of `source` to `target` durably (temp file, fsync,
    rename); the caller fsyncs `target.parent`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_beside(target)
    try:
        with source.open("rb") as stream, temp.open("wb") as out:
            out.write(stream.read(limit))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_atomically(source: Path, root: Path | str, relative: str) -> WrittenFile:
    """Copy `source` to `root/relative` durably (its folder fsynced too), for moves between
    media where source and target must both stay."""
    target = resolve_inside(root, Path(root) / relative)
    written = copy_durably(source, target)
    fsync_directory(target.parent)
    return written


# -- measured usage ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MeasuredUsage:
    bytes: int
    files: int


def measure_usage(root: Path | str) -> MeasuredUsage:
    """Bytes and files under `root`, counted from the disk; symlinks are not followed."""
    total = files = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for filename in filenames:
            try:
                stat = os.lstat(os.path.join(dirpath, filename))
            except FileNotFoundError:
                continue  # removed while we walked
            total += stat.st_size
            files += 1
    return MeasuredUsage(bytes=total, files=files)
