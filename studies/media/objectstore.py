"""Object storage media (kind `s3`): one bucket and key prefix per medium, through boto3.

Any S3 API works (AWS, MinIO, Ceph RGW; moto in the tests). What the archive relies on:

- **Writes are confirmed before they are indexed.** A file is uploaded with its SHA-256 (as
  `x-amz-checksum-sha256`, which S3 verifies, and as metadata the archive reads back); the
  index row is written only after the store answered 200. Objects from `PORTAL_S3_MULTIPART_BYTES`
  up go in parts. A process killed mid-upload leaves no object (an unfinished multipart
  upload is invisible, and `abort_stale_uploads` removes it), and no row.
- **Failures retry with backoff.** 503 SlowDown, throttling, 5xx, timeouts and dropped
  connections are retried (botocore's standard mode, `PORTAL_S3_ATTEMPTS` attempts, capped
  exponential backoff with jitter); a read that loses its connection midway resumes at the
  byte it reached. What still fails is an `ObjectStoreError` (an `OSError`), so ingest fails
  over to the next medium as it does for a full disk.
- **Reads stream.** Whole objects go to the client chunk by chunk (WADO-RS, zip). What has to
  be parsed (metadata, frames, rendering, C-MOVE) is fetched once into a bounded local cache
  below the tenant's storage root, hashed on the way and refused if it does not match the
  index.
- **Keys cannot collide across tenants.** Every medium's keys live below
  `<prefix>/portal-<schema>-<token>/`, and a tenant's own prefix may not contain a segment
  starting with `portal-`, so no medium's keys lie inside another's, whoever shares a bucket.
"""

import base64
import contextlib
import hashlib
import ipaddress
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.conf import settings

from configuration.egress import publicly_routable
from portal.sealing import SealBroken, unseal
from studies.storage import CHUNK, MeasuredUsage

if TYPE_CHECKING:
    from studies.models import StorageMedium

logger = logging.getLogger(__name__)

PROBE_KEY_PREFIX = ".portal-probe-"
RESERVED_SEGMENT = "portal-"


class ObjectStoreError(OSError):
    """An object storage request that failed after its retries, in words for a page."""


class EndpointRefused(ValueError):
    """The endpoint is outside what the platform lets tenants connect to."""


# -- where a medium's objects are -------------------------------------------------------------


def endpoint_error(url: str) -> str:
    """Why the archive may not use this endpoint ('' if it may). Empty means AWS itself."""
    if not url:
        return ""
    allowed = {u.rstrip("/") for u in settings.PORTAL_S3_ALLOWED_ENDPOINTS}
    if url.rstrip("/") in allowed:
        return ""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        return (
            "Use an https:// endpoint. A plain-http or internal endpoint (an in-house MinIO) "
            "must be listed by the platform administrator in PORTAL_S3_ALLOWED_ENDPOINTS."
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        return "Give the endpoint as https://host[:port] only; credentials go in their fields."
    try:
        ipaddress.ip_address(parts.hostname)
        addresses = {parts.hostname}
    except ValueError:
        try:
            entries = socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return f"{parts.hostname} does not resolve."
        addresses = {str(entry[4][0]) for entry in entries}
    if not all(publicly_routable(address) for address in addresses):
        return (
            f"The archive does not connect to {parts.hostname}: it is an internal address. "
            "The platform administrator can list the endpoint in PORTAL_S3_ALLOWED_ENDPOINTS."
        )
    return ""


def prefix_error(prefix: str) -> str:
    """Why a tenant's key prefix is unusable ('' if it is fine)."""
    if len(prefix) > 200:
        return "Use at most 200 characters for the key prefix."
    if not prefix.isprintable() or "\\" in prefix:
        return "The key prefix may hold printable characters only (no backslash)."
    segments = [s for s in prefix.strip("/").split("/") if s]
    if any(s in (".", "..") for s in segments):
        return "The key prefix may not contain “.” or “..” segments."
    if any(s.startswith(RESERVED_SEGMENT) for s in segments):
        return "Segments starting with “portal-” are the archive's own; choose another prefix."
    return ""


def medium_key_prefix(prefix: str, schema: str) -> str:
    """The prefix of every key of a new medium: the tenant's prefix, then a segment of its own."""
    segments = [s for s in prefix.strip("/").split("/") if s]
    segments.append(f"{RESERVED_SEGMENT}{schema}-{uuid.uuid4().hex[:12]}")
    return "/".join(segments) + "/"


def bucket_error(bucket: str) -> str:
    """The S3 bucket naming rules that matter here (3 to 63 of a-z 0-9 . -)."""
    if not 3 <= len(bucket) <= 63:
        return "A bucket name has 3 to 63 characters."
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789.-")
    if set(bucket) - allowed or bucket[0] in ".-" or bucket[-1] in ".-" or ".." in bucket:
        return "A bucket name holds lower-case letters, digits, dots and hyphens."
    return ""


def seal_context(medium: "StorageMedium") -> str:
    """What a sealed secret is bound to: its medium's row and key prefix (which names the
    tenant's schema), so a token copied to another medium does not open."""
    return f"medium:{medium.pk}:{medium.key_prefix}"


# -- the client -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    schema: str
    medium_id: int
    endpoint_url: str
    region: str
    bucket: str
    key_prefix: str
    addressing_style: str
    access_key_id: str
    secret_key: str

    @classmethod
    def of(cls, medium: "StorageMedium", *, secret_key: str | None = None) -> "Location":
        from portal.schemas import current_tenant

        if secret_key is None and medium.secret_key_sealed:
            try:
                secret_key = unseal(medium.secret_key_sealed, context=seal_context(medium))
            except SealBroken as error:
                raise ObjectStoreError(f"{medium.name}: {error}") from error
        return cls(
            schema=current_tenant().schema_name,
            medium_id=medium.pk or 0,
            endpoint_url=medium.endpoint_url,
            region=medium.region or "us-east-1",
            bucket=medium.bucket,
            key_prefix=medium.key_prefix,
            addressing_style=medium.addressing_style or "path",
            access_key_id=medium.access_key_id,
            secret_key=secret_key or "",
        )


_clients: dict[Location, Any] = {}
_clients_lock = threading.Lock()
CLIENT_CACHE_LIMIT = 256


def _client(location: Location) -> Any:
    """One botocore client per location and process (they are thread-safe)."""
    with _clients_lock:
        client = _clients.get(location)
        if client is not None:
            return client
    if why := endpoint_error(location.endpoint_url):
        raise ObjectStoreError(why)
    import boto3
    from botocore.config import Config

    config = Config(
        region_name=location.region,
        signature_version="s3v4",
        connect_timeout=settings.PORTAL_S3_TIMEOUT,
        read_timeout=settings.PORTAL_S3_TIMEOUT,
        retries={"max_attempts": settings.PORTAL_S3_ATTEMPTS, "mode": "standard"},
        s3={"addressing_style": location.addressing_style},
        # Checksums only where the archive asks for them (it sends its own SHA-256).
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=16,
    )
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=location.endpoint_url or None,
        aws_access_key_id=location.access_key_id or None,
        aws_secret_access_key=location.secret_key or None,
        config=config,
    )
    with _clients_lock:
        if len(_clients) >= CLIENT_CACHE_LIMIT:
            _clients.clear()
        _clients[location] = client
    return client


ERROR_WORDS = {
    "NoSuchBucket": "the bucket does not exist",
    "AccessDenied": "access is denied (check the key's permissions on the bucket)",
    "InvalidAccessKeyId": "the access key is not known to the endpoint",
    "SignatureDoesNotMatch": "the secret key does not match the access key",
    "NoSuchKey": "the object is missing",
    "404": "the object is missing",
    "NotFound": "not found",
    "SlowDown": "the endpoint kept asking to slow down (503 SlowDown)",
    "PermanentRedirect": "the bucket is in another region (set the region)",
    "AuthorizationHeaderMalformed": "the region does not match the bucket's",
}


def _words(error: BaseException) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return ERROR_WORDS.get(code, f"the endpoint answered {status} {code}".strip())
    if isinstance(error, BotoCoreError):
        return str(error)
    return str(error) or type(error).__name__


def _missing(error: BaseException) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(error, ClientError) and str(
        error.response.get("Error", {}).get("Code", "")
    ) in ("404", "NoSuchKey", "NotFound")


def _failures() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


class ObjectMissing(ObjectStoreError, FileNotFoundError):
    """The object a row names is not in the bucket."""


# -- the store --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectStat:
    size: int
    sha256: str  # as recorded at upload ('' if the object has none)


class ObjectStore:
    """A medium's bucket and prefix; every call retries and raises `ObjectStoreError`."""

    def __init__(self, medium: "StorageMedium", *, secret_key: str | None = None) -> None:
        self.medium = medium
        self.location = Location.of(medium, secret_key=secret_key)
        self.bucket = self.location.bucket
        self.prefix = self.location.key_prefix

    @property
    def client(self) -> Any:
        return _client(self.location)

    def key(self, relative: str) -> str:
        if relative.startswith("/") or ".." in relative.split("/"):
            raise ObjectStoreError(f"{relative!r} is not a relative object name")
        return self.prefix + relative

    def _fail(self, doing: str, relative: str, error: BaseException) -> ObjectStoreError:
        words = f"{self.medium.name}: {doing} {relative or self.prefix}: {_words(error)}"
        if _missing(error):
            return ObjectMissing(words)
        return ObjectStoreError(words)

    # writes

    def put_file(self, source: Path, relative: str, *, sha256: str, size: int) -> None:
        """Upload `source` under `relative`; returns once the store has confirmed it."""
        key = self.key(relative)
        metadata = {"sha256": sha256}
        failures: tuple[type[BaseException], ...] = (*_failures(), OSError)
        try:
            if size < settings.PORTAL_S3_MULTIPART_BYTES:
                with source.open("rb") as body:
                    self.client.put_object(
                        Bucket=self.bucket,
                        Key=key,
                        Body=body,
                        ContentLength=size,
                        ContentType="application/dicom",
                        ChecksumSHA256=base64.b64encode(bytes.fromhex(sha256)).decode(),
                        Metadata=metadata,
                    )
            else:
                from boto3.s3.transfer import TransferConfig

                part = settings.PORTAL_S3_MULTIPART_BYTES
                self.client.upload_file(
                    str(source),
                    self.bucket,
                    key,
                    ExtraArgs={
                        "ContentType": "application/dicom",
                        "Metadata": metadata,
                        "ChecksumAlgorithm": "SHA256",
                    },
                    Config=TransferConfig(
                        multipart_threshold=part, multipart_chunksize=part, use_threads=False
                    ),
                )
        except failures as error:
            if isinstance(error, ObjectStoreError):
                raise
            raise self._fail("storing", relative, error) from error

    def delete(self, relative: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(relative))
        except _failures() as error:
            if not _missing(error):
                raise self._fail("deleting", relative, error) from error

    # reads

    def stat(self, relative: str) -> ObjectStat | None:
        """Size and recorded SHA-256 of an object, None if there is none."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(relative))
        except _failures() as error:
            if _missing(error):
                return None
            raise self._fail("reading", relative, error) from error
        return ObjectStat(
            size=int(head["ContentLength"]), sha256=head.get("Metadata", {}).get("sha256", "")
        )

    def chunks(self, relative: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """The object's bytes from `offset`, `length` of them (all without), in chunks; a read
        cut off midway resumes where it stopped, up to `PORTAL_S3_ATTEMPTS` times."""
        from botocore.exceptions import (
            ConnectionClosedError,
            IncompleteReadError,
            ReadTimeoutError,
            ResponseStreamingError,
        )
        from urllib3.exceptions import HTTPError as Urllib3Error

        position, end = offset, None if length is None else offset + length
        resumes = 0
        while end is None or position < end:
            last = "" if end is None else str(end - 1)
            try:
                answer = self.client.get_object(
                    Bucket=self.bucket, Key=self.key(relative), Range=f"bytes={position}-{last}"
                )
            except _failures() as error:
                if end is None and position > 0 and "InvalidRange" in str(error):
                    return  # read to the end exactly
                raise self._fail("reading", relative, error) from error
            body = answer["Body"]
            try:
                for chunk in body.iter_chunks(CHUNK):
                    position += len(chunk)
                    yield chunk
            except (
                ConnectionClosedError,
                IncompleteReadError,
                ReadTimeoutError,
                ResponseStreamingError,
                Urllib3Error,
                OSError,
            ) as error:
                resumes += 1
                if resumes >= settings.PORTAL_S3_ATTEMPTS:
                    raise self._fail("reading", relative, error) from error
                logger.info("s3 read of %s cut at %d, resuming: %s", relative, position, error)
                time.sleep(min(2.0, 0.1 * 2**resumes))
                continue
            finally:
                body.close()
            if end is None:
                return
            if position < end:
                raise ObjectStoreError(
                    f"{self.medium.name}: {relative} ended {end - position} bytes early"
                )

    def fetch(self, relative: str, target: Path, *, size: int, sha256: str) -> None:
        """Download into `target` (written beside it, then renamed), refused unless its size
        and SHA-256 are those given: the index's."""
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.part"
        digest, received = hashlib.sha256(), 0
        try:
            with temp.open("xb") as out:
                for chunk in self.chunks(relative, 0, size):
                    received += len(chunk)
                    digest.update(chunk)
                    out.write(chunk)
            if received != size or (sha256 and digest.hexdigest() != sha256):
                raise ObjectStoreError(
                    f"{self.medium.name}: {relative} does not match its index entry "
                    f"({received} bytes, SHA-256 {digest.hexdigest()[:16]}…)"
                )
            os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)

    def sha256(self, relative: str) -> str:
        digest = hashlib.sha256()
        for chunk in self.chunks(relative):
            digest.update(chunk)
        return digest.hexdigest()

    def walk(self) -> Iterator[tuple[str, int]]:
        """(relative name, size) of every object below the medium's prefix."""
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for entry in page.get("Contents", []):
                    yield entry["Key"][len(self.prefix) :], int(entry["Size"])
        except _failures() as error:
            raise self._fail("listing", "", error) from error

    def usage(self) -> MeasuredUsage:
        total = files = 0
        for relative, size in self.walk():
            if relative.startswith("."):
                continue  # probe objects, as dot files on a disk
            total += size
            files += 1
        return MeasuredUsage(bytes=total, files=files)

    def delete_all(self) -> int:
        """Remove every object and unfinished upload below the medium's prefix (a purged
        tenant's); returns how many objects went."""
        removed, batch = 0, []
        try:
            for relative, _size in self.walk():
                batch.append({"Key": self.prefix + relative})
                if len(batch) == 1000:
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})
                    removed, batch = removed + len(batch), []
            if batch:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})
                removed += len(batch)
        except _failures() as error:
            raise self._fail("removing", "", error) from error
        self.abort_stale_uploads(older_than_seconds=0)
        return removed

    def abort_stale_uploads(self, *, older_than_seconds: int = 86400) -> int:
        """Abort multipart uploads below the prefix that were started long ago (a killed
        upload's parts cost storage until aborted)."""
        import datetime

        cutoff = datetime.datetime.now(datetime.UTC) - datetime.timedelta(
            seconds=older_than_seconds
        )
        aborted = 0
        try:
            answer = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix)
            for upload in answer.get("Uploads", []):
                if upload["Initiated"] <= cutoff:
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted += 1
        except _failures() as error:
            raise self._fail("cleaning", "", error) from error
        return aborted

    # probe

    def probe(self, size: int) -> dict[str, Any]:
        """Put, read back and delete a probe object of `size` random bytes; timings in ms."""
        relative = f"{PROBE_KEY_PREFIX}{uuid.uuid4().hex}"
        key = self.key(relative)
        data = os.urandom(size)
        timings: dict[str, Any] = {}
        try:
            started = time.perf_counter()
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except _failures() as error:
                if _missing(error):  # a HEAD's 404 has no body to name the code
                    raise ObjectStoreError(f"{self.bucket}: the bucket does not exist") from error
                raise
            timings["head_ms"] = round((time.perf_counter() - started) * 1000, 1)
            started = time.perf_counter()
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ChecksumSHA256=base64.b64encode(hashlib.sha256(data).digest()).decode(),
            )
            timings["put_ms"] = round((time.perf_counter() - started) * 1000, 1)
            try:
                started = time.perf_counter()
                read = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
                timings["get_ms"] = round((time.perf_counter() - started) * 1000, 1)
            finally:
                started = time.perf_counter()
                self.client.delete_object(Bucket=self.bucket, Key=key)
                timings["delete_ms"] = round((time.perf_counter() - started) * 1000, 1)
        except _failures() as error:
            raise self._fail("probing", "", error) from error
        timings["matches"] = hashlib.sha256(read).digest() == hashlib.sha256(data).digest()
        return timings


class StoredObject:
    """An object placed by an ingest run, removable like a `Path` (`unlink`)."""

    def __init__(self, store: ObjectStore, relative: str) -> None:
        self.store, self.relative = store, relative

    def unlink(self, missing_ok: bool = True) -> None:
        try:
            self.store.delete(self.relative)
        except ObjectStoreError:
            logger.exception("could not remove object %s", self.relative)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, StoredObject)
            and other.relative == self.relative
            and other.store.medium.pk == self.store.medium.pk
        )

    def __hash__(self) -> int:
        return hash((self.store.medium.pk, self.relative))


def store_for(medium: "StorageMedium") -> ObjectStore:
    return ObjectStore(medium)


# -- the local cache of fetched objects -------------------------------------------------------

CACHE_DIRECTORY = ".cache/objects"
_fetch_locks: dict[Path, threading.Lock] = {}
_fetch_locks_guard = threading.Lock()


def cache_root() -> Path:
    from studies.storage import tenant_root

    return tenant_root() / CACHE_DIRECTORY


def _cache_file(instance: Any) -> Path:
    from studies.storage import resolve_inside

    root = cache_root()
    name = f"{instance.relative_path}.{instance.sha256[:16]}"
    return resolve_inside(root.parent, root / str(instance.medium_id) / name)


def cached_copy(instance: Any) -> Path:
    """A local file with the instance's bytes: fetched once (checked against the index's size
    and SHA-256), then reused; its modification time says when it was last used."""
    path = _cache_file(instance)
    try:
        if path.stat().st_size == instance.size_bytes:
            os.utime(path)
            return path
    except FileNotFoundError:
        pass
    with _fetch_locks_guard:
        lock = _fetch_locks.setdefault(path, threading.Lock())
        if len(_fetch_locks) > 10_000:
            _fetch_locks.clear()
    with lock:
        if not path.exists():
            store_for(instance.medium).fetch(
                instance.relative_path, path, size=instance.size_bytes, sha256=instance.sha256
            )
    return path


def cache_drop(instance: Any) -> None:
    """Forget the cached copy of a removed or moved instance (it may hold patient data)."""
    try:
        _cache_file(instance).unlink(missing_ok=True)
    except (OSError, ValueError):
        logger.warning("could not drop the cached copy of %s", instance.pk)


def cache_trim(limit: int | None = None) -> MeasuredUsage:
    """Remove the least recently used cached copies until at most `limit` bytes remain
    (`PORTAL_S3_CACHE_BYTES`); returns what is left."""
    limit = settings.PORTAL_S3_CACHE_BYTES if limit is None else limit
    root = cache_root()
    entries: list[tuple[float, int, str]] = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for filename in filenames:
            if filename.startswith("."):
                continue  # a fetch in progress
            path = os.path.join(dirpath, filename)
            try:
                stat = os.lstat(path)
            except FileNotFoundError:
                continue
            entries.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _mtime, size, _path in entries)
    entries.sort()
    kept = len(entries)
    for _mtime, size, path in entries:
        if total <= limit:
            break
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        total -= size
        kept -= 1
    return MeasuredUsage(bytes=total, files=kept)
