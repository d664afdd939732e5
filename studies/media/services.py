"""Writes on the tenant's archive: storage media (validation, status, probe, usage)."""

import dataclasses
import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from audit.models import Outcome
from audit.services import audit_record
from portal import units
from portal.sealing import seal
from studies.media import objectstore
from studies.models import AddressingStyle, MediumKind, MediumStatus, StorageMedium
from studies.storage import MeasuredUsage, StoragePathError, measure_usage, resolve_inside

if TYPE_CHECKING:
    from tenants.models import Tenant

logger = logging.getLogger(__name__)

PROBE_BYTES = 8 << 20
PRIORITY_LIMIT = 1_000_000
S3_PROBE_BYTES = 1 << 20
SECRET_FIELD = "secret_key"  # noqa: S105 (a form field's name)
S3_FIELDS = ("endpoint_url", "region", "bucket", "addressing_style", "access_key_id")


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    message: str
    free_bytes: int | None = None
    total_bytes: int | None = None
    write_mb_per_s: float | None = None
    read_mb_per_s: float | None = None
    mount_point: str = ""
    latency_ms: float | None = None


def size_text(value: int) -> str:
    """`portal.units.size_text` with plain spaces, for messages that also travel through
    the API."""
    return units.size_text(value).replace("\xa0", " ")


# What Linux file systems take: a longer name or path fails with ENAMETOOLONG on every call.
NAME_LIMIT = 255
PATH_LIMIT = 4096


def _allowed_root(tenant: "Tenant") -> Path:
    return Path(tenant.storage_root).resolve()


def _resolve_root(text: str, allowed: Path) -> Path:
    """The medium directory `text` names (absolute, or relative to the allowed root)."""
    text = text.strip()
    if not text:
        raise ValidationError({"root": "Enter the medium's directory."})
    if not text.isprintable():
        raise ValidationError(
            {
                "root": "A directory name may hold only printable characters (no control or "
                "direction-override characters)."
            }
        )
    if len(text.encode()) > PATH_LIMIT or any(
        len(part.encode()) > NAME_LIMIT for part in Path(text).parts
    ):
        raise ValidationError(
            {"root": f"Use at most {NAME_LIMIT} bytes per directory name and {PATH_LIMIT} in all."}
        )
    candidate = Path(text) if os.path.isabs(text) else allowed / text
    try:
        resolved = candidate.resolve()
        inside = resolve_inside(allowed, candidate)
    except StoragePathError:
        raise ValidationError(
            {
                "root": f"The root must lie inside the tenant's allowed root {allowed}; "
                f"“{text}” resolves to {resolved}."
            }
        ) from None
    except (ValueError, OSError, RuntimeError) as error:  # NUL bytes, symlink loops
        raise ValidationError({"root": f"“{text}” is not a usable path: {error}."}) from None
    if inside == allowed:
        raise ValidationError(
            {"root": f"A medium needs its own directory below {allowed}, not the allowed root."}
        )
    return inside


def _overlap_error(root: Path, medium: StorageMedium, others: list[StorageMedium]) -> str | None:
    for other in others:
        if other.pk == medium.pk or other.kind != MediumKind.FILESYSTEM:
            continue
        theirs = Path(other.root).resolve()
        if root == theirs:
            relation = "is the root of"
        elif theirs in root.parents:
            relation = "lies inside"
        elif root in theirs.parents:
            relation = "contains"
        else:
            continue
        return (
            f"{root} {relation} medium “{other.name}” ({theirs}); media must not share directories."
        )
    return None


def _field_errors(
    medium: StorageMedium, tenant: "Tenant", others: list[StorageMedium], *, check_quota: bool
) -> dict[str, str]:
    """Every rule that needs no disk access, as {field: message}."""
    errors: dict[str, str] = {}
    medium.name = medium.name.strip()
    if not medium.name:
        errors["name"] = "Enter a name."
    elif len(medium.name) > 100:
        errors["name"] = "Use at most 100 characters."
    elif any(o.pk != medium.pk and o.name.lower() == medium.name.lower() for o in others):
        errors["name"] = f"A medium named “{medium.name}” exists already."
    if medium.kind not in MediumKind.values:
        errors["kind"] = "Choose a kind of medium."
    elif medium.kind == MediumKind.S3:
        errors.update(_object_storage_errors(medium))
    if medium.status not in MediumStatus.values:
        errors["status"] = "Choose online, read-only, offline or retired."
    if not 0 < medium.low_watermark < medium.high_watermark:
        errors["low_watermark"] = "The low watermark must be above 0 % and below the high one."
    if medium.high_watermark > 100:
        errors["high_watermark"] = "The high watermark can be at most 100 %."
    if not -PRIORITY_LIMIT <= medium.priority <= PRIORITY_LIMIT:
        errors["priority"] = f"Use a priority between -{PRIORITY_LIMIT} and {PRIORITY_LIMIT}."
    if medium.capacity_bytes <= 0:
        errors["capacity_bytes"] = "The capacity must be more than 0 bytes."
    elif check_quota and (quota := _quota_error(medium, tenant)):
        errors["capacity_bytes"] = quota
    return errors


def _object_storage_errors(medium: StorageMedium) -> dict[str, str]:
    """The rules of an object storage medium's location that need no request."""
    errors: dict[str, str] = {}
    medium.endpoint_url = medium.endpoint_url.strip().rstrip("/")
    medium.region, medium.bucket = medium.region.strip(), medium.bucket.strip()
    medium.access_key_id = medium.access_key_id.strip()
    if why := objectstore.endpoint_error(medium.endpoint_url):
        errors["endpoint_url"] = why
    if len(medium.region) > 64 or not all(c.isalnum() or c == "-" for c in medium.region):
        errors["region"] = "A region is letters, digits and hyphens (e.g. eu-central-1)."
    if why := objectstore.bucket_error(medium.bucket):
        errors["bucket"] = why
    if medium.addressing_style not in AddressingStyle.values:
        errors["addressing_style"] = "Choose path style or virtual host."
    if not medium.access_key_id or len(medium.access_key_id) > 128:
        errors["access_key_id"] = "Enter the access key ID (at most 128 characters)."
    elif not medium.access_key_id.isprintable() or " " in medium.access_key_id:
        errors["access_key_id"] = "An access key ID has no spaces or control characters."
    return errors


def _object_probe_error(medium: StorageMedium, secret_key: str | None) -> str:
    """Put, read back and delete a small object: credentials and bucket proven, or why not."""
    try:
        timings = objectstore.ObjectStore(medium, secret_key=secret_key).probe(4096)
    except OSError as error:
        return str(error)
    if not timings["matches"]:
        return "The probe object read back differs from what was written."
    return ""


def _quota_error(medium: StorageMedium, tenant: "Tenant") -> str:
    """No medium may be larger than what the tenant may store at all.

    The quota limits stored bytes (ingest enforces it), not the sum of the disks: a site
    adds a second disk to move studies onto, or to fill when the first is full.
    """
    if medium.status == MediumStatus.RETIRED or medium.capacity_bytes <= tenant.quota_bytes:
        return ""
    return (
        f"A capacity of {size_text(medium.capacity_bytes)} exceeds the tenant's quota of "
        f"{size_text(tenant.quota_bytes)}: no medium can hold more than the tenant may store."
    )


def _write_test(directory: Path) -> None:
    """Write, fsync and delete a small file: a directory we may not write to fails here."""
    path = directory / f".portal-write-test-{uuid.uuid4().hex}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"portal write test\n")
        os.fsync(fd)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)


def _prepare_root(root: Path) -> Path | None:
    """Create `root` if needed and prove it writable; returns the topmost directory created."""
    missing = [p for p in (root, *root.parents) if not p.exists()]
    created = missing[-1] if missing else None
    try:
        root.mkdir(parents=True, exist_ok=True)
        _write_test(root)
    except OSError as error:
        _remove_empty_tree(created)
        raise ValidationError({"root": f"{root} cannot be created or written: {error}"}) from None
    return created


def _remove_empty_tree(top: Path | None) -> None:
    """Remove `top` and the directories below it, keeping any that still hold something."""
    if top is None or not top.is_dir() or top.is_symlink():
        return
    for dirpath, _dirnames, _filenames in os.walk(top, topdown=False):
        try:
            os.rmdir(dirpath)
        except OSError:
            continue  # not empty: it stays


def _locked_media() -> list[StorageMedium]:
    """Every medium, locked until commit: concurrent edits cannot both spend the same quota."""
    return list(StorageMedium.objects.select_for_update().order_by("pk"))


def _raise_if(errors: dict[str, str]) -> None:
    if errors:
        raise ValidationError(errors)


EDITABLE_FIELDS = (
    "name",
    "root",
    "capacity_bytes",
    "high_watermark",
    "low_watermark",
    "priority",
)


def _snapshot(medium: StorageMedium) -> dict[str, Any]:
    """What the audit log records of a medium (never a secret: only whether one changed)."""
    snapshot = {field: getattr(medium, field) for field in EDITABLE_FIELDS} | {
        "kind": medium.kind,
        "status": medium.status,
    }
    if medium.kind == MediumKind.S3:
        snapshot |= {field: getattr(medium, field) for field in S3_FIELDS}
        snapshot["secret_key"] = hashlib.sha256(medium.secret_key_sealed.encode()).hexdigest()[:12]
    return snapshot


def medium_create(
    *,
    tenant: "Tenant",
    name: str,
    root: str,
    capacity_bytes: int,
    high_watermark: int = 90,
    low_watermark: int = 80,
    priority: int = 0,
    status: str = MediumStatus.ONLINE,
    kind: str = MediumKind.FILESYSTEM,
    endpoint_url: str = "",
    region: str = "",
    bucket: str = "",
    prefix: str = "",
    addressing_style: str = AddressingStyle.PATH,
    access_key_id: str = "",
    secret_key: str = "",
    request: HttpRequest | None = None,
    actor: Any = None,
) -> StorageMedium:
    """Add a medium after every rule passed: a directory is created and proven writable; a
    bucket is proven by putting, reading back and deleting a probe object."""
    medium = StorageMedium(
        name=name,
        kind=kind,
        root=root,
        capacity_bytes=capacity_bytes,
        high_watermark=high_watermark,
        low_watermark=low_watermark,
        priority=priority,
        status=status,
        endpoint_url=endpoint_url or "",
        region=region or "",
        bucket=bucket or "",
        addressing_style=addressing_style or AddressingStyle.PATH,
        access_key_id=access_key_id or "",
    )
    if kind == MediumKind.S3:
        return _object_medium_create(
            medium,
            tenant,
            prefix=prefix or "",
            secret_key=secret_key or "",
            request=request,
            actor=actor,
        )
    with transaction.atomic():
        others = _locked_media()
        errors = _field_errors(medium, tenant, others, check_quota=True)
        if "kind" not in errors:
            try:
                resolved = _resolve_root(root, _allowed_root(tenant))
            except ValidationError as error:
                errors.update({k: v[0] for k, v in error.message_dict.items()})
            else:
                medium.root = str(resolved)
                if overlap := _overlap_error(resolved, medium, others):
                    errors["root"] = overlap
        _raise_if(errors)
        created = _prepare_root(Path(medium.root))
        try:
            medium.save()
            audit_record(
                action="medium.create",
                request=request,
                actor=actor,
                target=medium,
                details=_snapshot(medium),
            )
        except BaseException:
            _remove_empty_tree(created)
            raise
    return medium


def _object_medium_create(
    medium: StorageMedium,
    tenant: "Tenant",
    *,
    prefix: str,
    secret_key: str,
    request: HttpRequest | None,
    actor: Any,
) -> StorageMedium:
    with transaction.atomic():
        others = _locked_media()
        errors = _field_errors(medium, tenant, others, check_quota=True)
        if why := objectstore.prefix_error(prefix):
            errors["prefix"] = why
        if not secret_key or len(secret_key) > 1024:
            errors[SECRET_FIELD] = "Enter the secret access key."
        _raise_if(errors)
        medium.key_prefix = objectstore.medium_key_prefix(prefix, tenant.schema_name)
        medium.root = f"s3://{medium.bucket}/{medium.key_prefix}"
        if why := _object_probe_error(medium, secret_key):
            raise ValidationError({"bucket": f"The bucket cannot be used: {why}"})
        medium.save()
        medium.secret_key_sealed = seal(secret_key, context=objectstore.seal_context(medium))
        medium.save(update_fields=["secret_key_sealed"])
        audit_record(
            action="medium.create",
            request=request,
            actor=actor,
            target=medium,
            details=_snapshot(medium),
        )
    return medium


def medium_update(
    *,
    tenant: "Tenant",
    medium: StorageMedium,
    name: str | None = None,
    root: str | None = None,
    capacity_bytes: int | None = None,
    high_watermark: int | None = None,
    low_watermark: int | None = None,
    priority: int | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    addressing_style: str | None = None,
    access_key_id: str | None = None,
    secret_key: str | None = None,
    request: HttpRequest | None = None,
    actor: Any = None,
) -> StorageMedium:
    """Change what was given (None keeps a value); the same rules as creation apply.

    A root can only move while the current one holds no files: the index would lose them.
    An object storage medium keeps its bucket and prefix; new credentials or a new endpoint
    are proven with a probe object before they are saved (an empty secret keeps the old).
    """
    given = {
        "name": name,
        "root": root,
        "capacity_bytes": capacity_bytes,
        "high_watermark": high_watermark,
        "low_watermark": low_watermark,
        "priority": priority,
    }
    reach = {
        "endpoint_url": endpoint_url,
        "region": region,
        "addressing_style": addressing_style,
        "access_key_id": access_key_id,
    }
    with transaction.atomic():
        others = _locked_media()
        current = next((o for o in others if o.pk == medium.pk), None)
        if current is None:
            raise StorageMedium.DoesNotExist(f"Medium {medium.pk} was deleted meanwhile.")
        before = _snapshot(current)
        for field, value in given.items():
            if value is not None and field != "root":
                setattr(current, field, value)
        new_secret = secret_key or None
        reach_changed = current.kind == MediumKind.S3 and (
            new_secret is not None
            or any(v is not None and v != getattr(current, f) for f, v in reach.items())
        )
        if current.kind == MediumKind.S3:
            for field, value in reach.items():
                if value is not None:
                    setattr(current, field, value)
        # A medium that does not grow keeps its share even if the quota was lowered since.
        grows = capacity_bytes is not None and capacity_bytes > before["capacity_bytes"]
        errors = _field_errors(current, tenant, others, check_quota=grows)
        if current.kind != MediumKind.S3:
            errors.pop("kind", None)  # an existing medium's kind is not being changed here
        if new_secret is not None and len(new_secret) > 1024:
            errors[SECRET_FIELD] = "A secret access key has at most 1024 characters."
        if reach_changed and not errors and (why := _object_probe_error(current, new_secret)):
            errors["access_key_id"] = f"The new settings do not reach the bucket: {why}"
        new_root: Path | None = None
        if root is not None and current.kind == MediumKind.FILESYSTEM:
            try:
                resolved = _resolve_root(root, _allowed_root(tenant))
            except ValidationError as error:
                errors.update({k: v[0] for k, v in error.message_dict.items()})
            else:
                if resolved != Path(current.root).resolve():
                    new_root = resolved
                    errors.update(_move_errors(current, resolved, others))
        _raise_if(errors)
        created = _prepare_root(new_root) if new_root is not None else None
        if new_root is not None:
            current.root = str(new_root)
        if new_secret is not None:
            current.secret_key_sealed = seal(new_secret, context=objectstore.seal_context(current))
        changes = {
            field: [before[field], value]
            for field, value in _snapshot(current).items()
            if before[field] != value
        }
        if not changes:
            return current
        try:
            current.save()
            audit_record(
                action="medium.update",
                request=request,
                actor=actor,
                target=current,
                details={"changes": changes},
            )
        except BaseException:
            _remove_empty_tree(created)
            raise
    return current


def _move_errors(
    medium: StorageMedium, new_root: Path, others: list[StorageMedium]
) -> dict[str, str]:
    if overlap := _overlap_error(new_root, medium, others):
        return {"root": overlap}
    usage = measure_usage(medium.root)
    if usage.files:
        return {
            "root": f"{medium.root} holds {usage.files} file{'s' if usage.files != 1 else ''} "
            f"({size_text(usage.bytes)}); move them before changing the root, "
            "or add a new medium instead."
        }
    return {}


def _check_writable_now(medium: StorageMedium, tenant: "Tenant") -> str:
    """Why an existing medium cannot take new files at its root right now ('' if it can)."""
    if medium.kind == MediumKind.S3:
        return _object_probe_error(medium, None)
    try:
        root = resolve_inside(_allowed_root(tenant), medium.root)
    except StoragePathError:
        return f"{medium.root} is no longer inside the tenant's allowed root {tenant.storage_root}."
    if not root.is_dir():
        return f"{root} is not a directory here: is the disk mounted?"
    try:
        _write_test(root)
    except OSError as error:
        return f"{root} cannot be written: {error}"
    return ""


def medium_set_status(
    *,
    tenant: "Tenant",
    medium: StorageMedium,
    status: str,
    request: HttpRequest | None = None,
    actor: Any = None,
) -> StorageMedium:
    """Move a medium to online, read-only, offline or retired.

    Retiring always works. Going online proves the root writable; leaving `retired` checks
    the capacity against the quota again (it may have been lowered meanwhile).
    """
    if status not in MediumStatus.values:
        raise ValidationError({"status": "Choose online, read-only, offline or retired."})
    with transaction.atomic():
        others = _locked_media()
        current = next((o for o in others if o.pk == medium.pk), None)
        if current is None:
            raise StorageMedium.DoesNotExist(f"Medium {medium.pk} was deleted meanwhile.")
        previous = current.status
        if previous == status:
            return current
        current.status = status
        if previous == MediumStatus.RETIRED and (error := _quota_error(current, tenant)):
            raise ValidationError({"status": error})
        if status == MediumStatus.ONLINE and (error := _check_writable_now(current, tenant)):
            raise ValidationError({"status": f"Cannot put the medium online: {error}"})
        current.save(update_fields=["status"])
        audit_record(
            action="medium.status_change",
            request=request,
            actor=actor,
            target=current,
            details={"name": current.name, "from": previous, "to": status},
        )
    return current


def medium_delete(
    *,
    tenant: "Tenant",
    medium: StorageMedium,
    request: HttpRequest | None = None,
    actor: Any = None,
) -> None:
    """Delete a medium that holds nothing (measured now), and its directory once committed."""
    with transaction.atomic():
        current = StorageMedium.objects.select_for_update().filter(pk=medium.pk).first()
        if current is None:
            raise StorageMedium.DoesNotExist(f"Medium {medium.pk} was deleted meanwhile.")
        usage = medium_usage_now(current)
        if usage.files or usage.bytes:
            raise ValidationError(
                f"Medium “{current.name}” holds {usage.files} "
                f"file{'s' if usage.files != 1 else ''} ({size_text(usage.bytes)}); "
                "retire it instead."
            )
        audit_record(
            action="medium.delete",
            request=request,
            actor=actor,
            target=current,
            details={"name": current.name, "root": current.root},
        )
        current.delete()
        if current.kind == MediumKind.FILESYSTEM:
            try:
                root = resolve_inside(_allowed_root(tenant), current.root)
            except StoragePathError:
                return  # never remove anything outside the tenant's allowed root
            transaction.on_commit(lambda: _remove_empty_tree(root))


def _mount_point(path: Path) -> str:
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return str(path)


def _probe_directory(root: Path, size: int) -> ProbeResult:
    """Write `size` random bytes with fsync, read them back uncached, compare, delete."""
    path = root / f".portal-probe-{uuid.uuid4().hex}"
    chunk = 1 << 20
    written = hashlib.sha256()
    try:
        started = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            for offset in range(0, size, chunk):
                block = os.urandom(min(chunk, size - offset))
                written.update(block)
                os.write(fd, block)
            os.fsync(fd)
            # Drop the cached pages so that the read below measures the disk, not memory.
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        write_seconds = time.perf_counter() - started
        started = time.perf_counter()
        read = hashlib.sha256()
        with path.open("rb") as stream:
            while block := stream.read(chunk):
                read.update(block)
        read_seconds = time.perf_counter() - started
    finally:
        path.unlink(missing_ok=True)
    usage = shutil.disk_usage(root)
    if read.digest() != written.digest():
        return ProbeResult(
            ok=False,
            message=f"The {size_text(size)} read back from {root} differ from what was written.",
            free_bytes=usage.free,
            total_bytes=usage.total,
            mount_point=_mount_point(root),
        )
    return ProbeResult(
        ok=True,
        message="",
        free_bytes=usage.free,
        total_bytes=usage.total,
        write_mb_per_s=round(size / max(write_seconds, 1e-9) / 1e6, 1),
        read_mb_per_s=round(size / max(read_seconds, 1e-9) / 1e6, 1),
        mount_point=_mount_point(root),
    )


def _probe_object_store(medium: StorageMedium, size: int) -> ProbeResult:
    size = min(size, S3_PROBE_BYTES)
    try:
        timings = objectstore.ObjectStore(medium).probe(size)
    except OSError as error:
        return ProbeResult(ok=False, message=f"Probe of {medium.root} failed: {error}")
    if not timings["matches"]:
        return ProbeResult(
            ok=False, message=f"The {size_text(size)} read back from {medium.root} differ."
        )
    seconds = lambda key: max(timings[key], 0.001) / 1000  # noqa: E731
    return ProbeResult(
        ok=True,
        message=(
            f"Put, read back and deleted {size_text(size)} in {medium.root}: bucket check "
            f"{timings['head_ms']} ms, put {timings['put_ms']} ms, get {timings['get_ms']} ms, "
            f"delete {timings['delete_ms']} ms."
        ),
        write_mb_per_s=round(size / seconds("put_ms") / 1e6, 1),
        read_mb_per_s=round(size / seconds("get_ms") / 1e6, 1),
        latency_ms=timings["head_ms"],
    )


def _probe(medium: StorageMedium, tenant: "Tenant", size: int) -> ProbeResult:
    if medium.kind == MediumKind.S3:
        return _probe_object_store(medium, size)
    try:
        root = resolve_inside(_allowed_root(tenant), medium.root)
    except StoragePathError:
        return ProbeResult(
            ok=False,
            message=f"Refused: {medium.root} is outside the allowed root {tenant.storage_root}.",
        )
    if not root.is_dir():
        return ProbeResult(
            ok=False, message=f"{root} does not exist or is not a directory: is the disk mounted?"
        )
    try:
        result = _probe_directory(root, size)
    except OSError as error:
        return ProbeResult(ok=False, message=f"Probe of {root} failed: {error}")
    if not result.ok:
        return result
    assert result.total_bytes is not None and result.free_bytes is not None
    message = (
        f"Wrote, read back and deleted {size_text(size)} in {root}: "
        f"write {result.write_mb_per_s} MB/s, read {result.read_mb_per_s} MB/s; "
        f"{size_text(result.free_bytes)} free of {size_text(result.total_bytes)} "
        f"on the filesystem mounted at {result.mount_point}."
    )
    if medium.capacity_bytes > result.total_bytes:
        message += (
            f" Note: the capacity ({size_text(medium.capacity_bytes)}) is larger than this "
            "filesystem: is the right disk mounted?"
        )
    return dataclasses.replace(result, message=message)


def medium_probe(
    *,
    tenant: "Tenant",
    medium: StorageMedium,
    size_bytes: int = PROBE_BYTES,
    request: HttpRequest | None = None,
    actor: Any = None,
) -> ProbeResult:
    """Write, read back and delete a test object; keep and audit the outcome on the medium."""
    result = _probe(medium, tenant, size_bytes)
    now = timezone.now()
    with transaction.atomic():
        StorageMedium.objects.filter(pk=medium.pk).update(
            last_probe_at=now, last_probe_ok=result.ok, last_probe_message=result.message
        )
        medium.last_probe_at, medium.last_probe_ok = now, result.ok
        medium.last_probe_message = result.message
        audit_record(
            action="medium.probe",
            request=request,
            actor=actor,
            target=medium,
            outcome=Outcome.SUCCESS if result.ok else Outcome.FAILURE,
            details={k: v for k, v in dataclasses.asdict(result).items() if v not in (None, "")},
        )
    return result


def medium_usage_now(medium: StorageMedium) -> MeasuredUsage:
    """Bytes and files the medium holds now: walked on a disk, listed in a bucket (probe
    objects and other dot names left out, as on a disk they are counted)."""
    if medium.kind == MediumKind.S3:
        return objectstore.ObjectStore(medium).usage()
    return measure_usage(medium.root)


def media_measure_usage() -> Iterator[tuple[StorageMedium, MeasuredUsage]]:
    """Measure each medium that is not retired or offline and store the figures; a bucket
    that cannot be listed keeps its last figures. Aborts multipart uploads a killed worker
    left in a bucket a day ago or more, and trims the object cache on the way."""
    media = StorageMedium.objects.exclude(status__in=[MediumStatus.RETIRED, MediumStatus.OFFLINE])
    for medium in media:
        try:
            if medium.kind == MediumKind.S3:
                objectstore.ObjectStore(medium).abort_stale_uploads()
            usage = medium_usage_now(medium)
        except OSError as error:
            logger.warning("usage of medium %s not measured: %s", medium.name, error)
            continue
        StorageMedium.objects.filter(pk=medium.pk).update(
            used_bytes=usage.bytes, file_count=usage.files, usage_measured_at=timezone.now()
        )
        yield medium, usage
    objectstore.cache_trim()
