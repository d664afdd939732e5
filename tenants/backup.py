"""Back up one tenant into a directory, and restore such a backup as a new tenant.

A tenant is three things, and a backup holds all three (a `pg_dump -n` of its schema would
hold only the first):

1. the rows of its schema;
2. its public-schema facts (name, status, quotas, AE title, domains, storage root);
3. its files below its storage root.

Layout of an export directory::

    manifest.json        written last, atomically (temp file, fsync, rename)
    db/<table>.csv       one file per table of the tenant schema
    files/<path>         the tenant's storage root, relative paths kept

**Rows** are read with `COPY (SELECT <columns> FROM <schema>.<table>) TO STDOUT WITH (FORMAT
csv, HEADER true)` on one connection, in one `REPEATABLE READ READ ONLY` transaction, so every
table comes from the same snapshot. CSV (not pg_dump, not binary COPY) because it is the same
for every PostgreSQL version: the embedded server is 16, the machine's client tools are 15,
and CI may have either. The session is set to `TimeZone=UTC`, `DateStyle=ISO, YMD`,
`IntervalStyle=postgres`, `extra_float_digits=3`, UTF-8, so that values print unambiguously
and load back exactly (CSV tells NULL, unquoted, from the empty string, quoted). Every table
of the schema is exported (the list comes from the catalogue, not from models), except:

- `django_migrations`: its rows go into the manifest as the *migration state*; an import
  refuses a backup whose state is not exactly that of this portal (older or newer);
- `django_session`: sessions stay behind; nobody is logged in to the restored copy;
- the django-axes tables (failed-login counters, lockouts, access logs): transient throttle
  state of the old site. The audit log keeps the lasting record of logins and lockouts.

Users come along with their password hashes, TOTP devices and API token hashes: a backup
is the same hospital moving (or restoring) its archive, so its people keep their
credentials. Treat an export directory like the database itself: it is written for its
owner only (directories 0700, files 0600, created so from the start), and `verify` warns
(as a problem) when someone has opened it up since.

**Files**: everything below the tenant's storage root: the media, `.thumbnails`,
`.quarantine` (rejected files that admins inspect and `IngestItem.quarantine_path` names)
and `.staging` (files of items still pending, which the restored copy can finish). Skipped:
the ingest's own temp files (`.<name>.tmp`, never referenced by the index) and anything
that is not a regular file; a symbolic link is reported as a problem, never followed.
Copies are streamed in 1 MiB chunks, fsynced, with their modification times kept (the
quarantine purge goes by them), and hashed on the way: the manifest holds each file's
SHA-256 and size. Every indexed instance file is checked against the index's `sha256` and
`size_bytes` while it is copied; a mismatch, a missing file, or a medium outside the
tenant's root is a *problem*. With problems the export fails (and removes what it wrote)
unless `allow_problems` is given; then they are listed in the manifest and the copy keeps
the archive as it is, damage included.

The rows are a snapshot, the files are copied after it: suspend the tenant first for an
exact copy. Otherwise an instance stored meanwhile is an extra (orphan) file, and one
deleted meanwhile is reported missing.

**Import** (always into a new slug) changes nothing until everything has been checked: the
slug (never used, whatever the status: slugs are never reused), the AE title (the source's
is taken while the source exists, so the copy gets `--ae-title` or one derived from its
slug), the manifest, the SHA-256 and size of every file in the directory (and no file
that the manifest does not list; no symbolic link anywhere below `db/` and `files/`), the
migration state and that the template's tables and columns are exactly the ones exported.
The new storage root must be empty or new, inside PORTAL_STORAGE_ROOT, and apart from every
other tenant's root (not equal, inside or around one). Then, in **one transaction**:

1. `tenant_create()`: the normal provisioning path (row, domain, history, cloned schema,
   admin, default medium; its own transaction becomes a savepoint of ours);
2. the files are copied into a hidden sibling of the new root, `.import-<slug>-<hex>`,
   hashed again on the way;
3. every table of the new schema except `django_migrations` is truncated and the CSV rows are
   copied in, replacing what provisioning made (its admin, default medium, audit rows);
   identity sequences are set past the largest id; row counts are compared;
4. `StorageMedium.root` and the absolute `IngestItem.staged_path`/`quarantine_path` values
   are rewritten from the old storage root to the new one; then every medium's root and every
   such path must resolve inside the new root, or the import is refused (a crafted backup
   could otherwise name another tenant's files, which the ingest's retry would move);
5. one `tenant.import` audit row in the new tenant and an `import` event in its history.

The copy starts active, as every new tenant does (with its own AE title and host name, so
it takes no traffic meant for the source); suspend it if it must stay dark for a while.

The append-only tables (`audit_auditevent`, `configuration_settingchange`: a trigger
refuses UPDATE, DELETE and TRUNCATE) are emptied with their user triggers disabled by
`ALTER TABLE ... DISABLE TRIGGER USER` in the new schema only, and enabled again before the
commit; only their owner may do that, so the import runs as the owner role
(`DATABASE_OWNER_URL`, portal/dbroles.py), like migrations. That is safe: DDL is
transactional, so no other session ever sees the schema or the disabled triggers (the tenant
is not committed, hence not live), and a failure rolls the switch back with everything else.
The rows removed are the few that provisioning wrote seconds before; what the tenant's
history holds is exactly the source's.

After the commit the hidden directory is renamed to the new root. If anything fails, the
transaction rolls back (no tenant row, domain, event or schema) and the hidden directory is
removed: nothing or complete. An import killed outright leaves only its hidden directory,
which the next import removes (an advisory lock per slug tells a dead import from a running
one), so the new root stays untouched and a retry works. The source is only read (plus
one `tenant.export` audit row in it and an `export` event in its history).

Not carried over: sessions and login throttling (above); custom domains (they route to the
source while it exists; the manifest lists them, add them with `domain_add` once the
source is gone); the tenant history (`TenantEvent`, in the manifest for the record; the
copy's own history starts with `create` and `import`). Object-storage (S3) media are not
copied (they are not supported yet).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import shutil
import stat
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import IO, Any

import psycopg
from django.apps import apps
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.migrations.loader import MigrationLoader
from django.utils import timezone
from django_tenants.utils import quote_schema_name, schema_context, schema_exists

from audit.services import audit_record
from portal.dbroles import app_grants, app_role, as_owner, owns_tables
from portal.schemas import tenant_connection
from studies.storage import StoragePathError, resolve_inside
from tenants.models import Domain, Tenant, TenantEvent, TenantStatus
from tenants.provisioning import template_is_current
from tenants.selectors import ae_title_holder
from tenants.validators import schema_name_for, validate_ae_title, validate_slug

logger = logging.getLogger(__name__)

FORMAT = "pacs-portal-tenant-export"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CHUNK = 1024 * 1024
MAX_LISTED_PROBLEMS = 20
# An export holds password hashes, TOTP secrets and PHI: only its owner may read it.
PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600
# An import copies the files into `<parent of the new root>/.import-<slug>-<hex>` and renames
# that to the new root once the transaction has committed.
IMPORT_PREFIX = ".import-"
IMPORT_LOCK_WAIT = 15.0  # seconds: a killed import's session may take a moment to end

# The session settings under which the CSV is written and read back.
CSV_SESSION = {
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    "client_encoding": "UTF8",
}
_PLAIN_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

_TABLES = """
    SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY c.relname
"""
_COLUMNS = """
    SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
      AND a.attgenerated = ''
    ORDER BY c.relname, a.attnum
"""
_TRIGGER_TABLES = """
    SELECT DISTINCT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = %s AND NOT t.tgisinternal ORDER BY c.relname
"""
_IDENTITY_COLUMNS = """
    SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = %s AND NOT a.attisdropped
      AND (a.attidentity <> '' OR pg_get_serial_sequence(
            quote_ident(n.nspname) || '.' || quote_ident(c.relname), a.attname) IS NOT NULL)
      AND c.relkind IN ('r', 'p') AND a.attnum > 0
"""


class BackupError(Exception):
    """An export or import that cannot (or may not) go on; the message says why."""


# -- the manifest ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableDump:
    name: str
    file: str  # relative to the export directory: db/<name>.csv
    columns: tuple[str, ...]
    rows: int
    size: int
    sha256: str


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the storage root; stored at files/<path>
    size: int
    sha256: str
    mtime_ns: int


@dataclass(frozen=True)
class Manifest:
    format_version: int
    portal_version: str
    created_at: str
    source: dict[str, Any]
    migrations: tuple[tuple[str, str], ...]
    tables: tuple[TableDump, ...]
    files: tuple[FileEntry, ...]
    skipped_tables: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    postgresql: dict[str, Any] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(t.size for t in self.tables) + sum(f.size for f in self.files)

    @property
    def file_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "portal_version": self.portal_version,
            "created_at": self.created_at,
            "source": self.source,
            "postgresql": self.postgresql,
            "migrations": [list(m) for m in self.migrations],
            "tables": [asdict(t) | {"columns": list(t.columns)} for t in self.tables],
            "skipped_tables": list(self.skipped_tables),
            "files": [asdict(f) for f in self.files],
            "total_bytes": self.total_bytes,
            "problems": list(self.problems),
        }

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """Parse and check the shape of a manifest; raises BackupError naming what is wrong."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BackupError(f"{MANIFEST} is not a tenant export manifest.")
        version = data.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise BackupError(
                f"{MANIFEST} has format version {version!r}; this portal reads version "
                f"{FORMAT_VERSION} and older: import it with a newer portal."
            )
        try:
            tables = tuple(
                TableDump(
                    name=str(t["name"]),
                    file=str(t["file"]),
                    columns=tuple(str(c) for c in t["columns"]),
                    rows=int(t["rows"]),
                    size=int(t["size"]),
                    sha256=str(t["sha256"]),
                )
                for t in data["tables"]
            )
            files = tuple(
                FileEntry(
                    path=str(f["path"]),
                    size=int(f["size"]),
                    sha256=str(f["sha256"]),
                    mtime_ns=int(f["mtime_ns"]),
                )
                for f in data["files"]
            )
            manifest = cls(
                format_version=version,
                portal_version=str(data["portal_version"]),
                created_at=str(data["created_at"]),
                source=dict(data["source"]),
                migrations=tuple((str(a), str(n)) for a, n in data["migrations"]),
                tables=tables,
                files=files,
                skipped_tables=tuple(str(t) for t in data.get("skipped_tables", [])),
                problems=tuple(str(p) for p in data.get("problems", [])),
                postgresql=dict(data.get("postgresql", {})),
            )
            for key in ("slug", "schema", "name", "storage_root", "quota_bytes", "quota_users"):
                if key not in manifest.source:
                    raise KeyError(f"source.{key}")
        except (KeyError, TypeError, ValueError) as error:
            raise BackupError(f"{MANIFEST} is incomplete or malformed ({error}).") from None
        for table in tables:
            if not _PLAIN_NAME.match(table.name) or table.file != f"db/{table.name}.csv":
                raise BackupError(f"{MANIFEST} names an invalid table {table.name!r}.")
            if not all(_PLAIN_NAME.match(c) for c in table.columns) or not table.columns:
                raise BackupError(f"{MANIFEST} lists invalid columns for {table.name}.")
            if not _SHA256.match(table.sha256):
                raise BackupError(f"{MANIFEST} has an invalid SHA-256 for {table.file}.")
        for entry in files:
            _safe_relative(entry.path)
            if not _SHA256.match(entry.sha256):
                raise BackupError(f"{MANIFEST} has an invalid SHA-256 for files/{entry.path}.")
        return manifest


def _safe_relative(path: str) -> PurePosixPath:
    """A manifest path: relative, no `..`, no empty or dot parts (a crafted manifest must not
    write outside the new tenant's root)."""
    pure = PurePosixPath(path)
    if (
        not path
        or pure.is_absolute()
        or "\\" in path
        or "\x00" in path
        or any(part in {"", ".", ".."} for part in path.split("/"))
    ):
        raise BackupError(f"{MANIFEST} lists an unsafe path {path!r}.")
    return pure


def portal_version() -> str:
    try:
        return metadata.version("pacs-portal")
    except metadata.PackageNotFoundError:
        return "unknown"


# -- small helpers -----------------------------------------------------------------------------


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def skipped_tables() -> frozenset[str]:
    """Tables of a tenant schema that are not exported (see the module docstring)."""
    tables = {"django_migrations", "django_session"}
    tables |= {model._meta.db_table for model in apps.get_app_config("axes").get_models()}
    return frozenset(tables)


def _copy_file(source: Path, target: Path, mode: int = 0o666) -> tuple[int, str]:
    """Stream `source` (never through a symbolic link) to a new file `target` created with
    `mode` (less the umask), 1 MiB at a time, fsynced; (size, SHA-256)."""
    digest, size = hashlib.sha256(), 0
    reader_fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    with (
        os.fdopen(reader_fd, "rb") as reader,
        _create(target, mode) as writer,
    ):
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
            writer.write(chunk)
            size += len(chunk)
        writer.flush()
        os.fsync(writer.fileno())
    return size, digest.hexdigest()


def _create(path: Path, mode: int, buffering: int = -1) -> IO[bytes]:
    """A new file (never an existing one) opened for writing, created with `mode` from the
    start: the data is never readable by others, not even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    return os.fdopen(fd, "wb", buffering=buffering)


def _private_dirs(base: Path, directory: Path) -> None:
    """Make `directory` and its missing parents up to `base` (which exists), mode 0700."""
    missing: list[Path] = []
    while directory != base and not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        path.mkdir(mode=PRIVATE_DIR)


def _hash_file(path: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as reader:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _HashingWriter:
    """A file that counts and hashes what is written to it."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out, self.digest, self.size = out, hashlib.sha256(), 0

    def write(self, data: bytes | memoryview) -> None:
        self.digest.update(data)
        self.out.write(data)
        self.size += len(data)


def _set_csv_session(cursor: Any) -> None:
    for name, value in CSV_SESSION.items():
        cursor.execute(f"SET LOCAL {name} TO '{value}'")


def _schema_columns(cursor: Any, schema: str) -> dict[str, tuple[str, ...]]:
    cursor.execute(_TABLES, [schema])
    columns: dict[str, list[str]] = {row[0]: [] for row in cursor.fetchall()}
    cursor.execute(_COLUMNS, [schema])
    for table, column in cursor.fetchall():
        columns.setdefault(table, []).append(column)
    return {table: tuple(cols) for table, cols in columns.items()}


def _listing(problems: list[str]) -> str:
    shown = problems[:MAX_LISTED_PROBLEMS]
    more = len(problems) - len(shown)
    return "\n".join(["  " + p for p in shown] + ([f"  … and {more} more"] if more else []))


# -- export ------------------------------------------------------------------------------------


def tenant_export(
    *, tenant: Tenant, target: Path, actor: str = "system", allow_problems: bool = False
) -> Manifest:
    """Write one tenant's rows, public facts and files into the new directory `target`.

    Raises BackupError when `target` is not empty, the tenant has no schema, or (unless
    `allow_problems`) an instance file is missing or differs from the index.
    """
    if tenant.status in {TenantStatus.PURGED, TenantStatus.PROVISIONING}:
        raise BackupError(f"Tenant “{tenant.slug}” is {tenant.status}: there is nothing to export.")
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupError(f"{target} is not an empty directory; export into a new one.")
    created_target = not target.exists()
    target.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    try:
        os.chmod(target, PRIVATE_DIR)
        manifest = _export(tenant, target, allow_problems)
        _write_manifest(target, manifest)
    except BaseException:
        _remove_export(target, created_target)
        raise
    with schema_context(tenant.schema_name):
        audit_record(
            action="tenant.export",
            actor_name=actor,
            object_type="tenant",
            object_id=tenant.slug,
            details={
                "target": str(target),
                "rows": manifest.rows,
                "files": len(manifest.files),
                "bytes": manifest.total_bytes,
                "problems": len(manifest.problems),
            },
        )
    TenantEvent.objects.create(
        tenant=tenant,
        action="export",
        actor=actor,
        from_status=tenant.status,
        to_status=tenant.status,
        details={"target": str(target), "bytes": manifest.total_bytes},
    )
    logger.info("tenant %s exported to %s by %s", tenant.slug, target, actor)
    return manifest


def _remove_export(target: Path, created_target: bool) -> None:
    if created_target:
        shutil.rmtree(target, ignore_errors=True)
        return
    for name in (MANIFEST, "db", "files"):
        path = target / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _export(tenant: Tenant, target: Path, allow_problems: bool) -> Manifest:
    schema = tenant.schema_name
    (target / "db").mkdir(mode=PRIVATE_DIR)
    (target / "files").mkdir(mode=PRIVATE_DIR)
    skip = skipped_tables()
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    # A connection of its own: one snapshot for every table, whatever Django's is doing.
    with psycopg.connect(**params) as raw:
        raw.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        raw.read_only = True
        with raw.transaction(), raw.cursor() as cursor:
            _set_csv_session(cursor)
            if not schema_exists(schema):
                raise BackupError(f"The schema {schema} of “{tenant.slug}” does not exist.")
            columns = _schema_columns(cursor, schema)
            cursor.execute(
                f"SELECT app, name FROM {quote_schema_name(schema)}.django_migrations "  # noqa: S608
                "ORDER BY app, name"
            )
            migrations = tuple((str(a), str(n)) for a, n in cursor.fetchall())
            tables = tuple(
                _export_table(cursor, schema, table, cols, target)
                for table, cols in columns.items()
                if table not in skip
            )
            cursor.execute(
                "SELECT id, name, kind, root FROM "  # noqa: S608 - catalogue names
                f"{quote_schema_name(schema)}.studies_storagemedium"
            )
            media = cursor.fetchall()
            indexed = _indexed_files(raw, schema, tenant, media)
            server_version = raw.info.server_version
    problems = list(indexed.problems)
    files = _export_files(Path(tenant.storage_root), target / "files", indexed, problems)
    if problems and not allow_problems:
        raise BackupError(
            f"The export of “{tenant.slug}” found {len(problems)} problem(s):\n"
            f"{_listing(problems)}\nRepair them (e.g. `storage_verify`), or export with "
            "--allow-problems to keep the archive as it is, listed in the manifest."
        )
    return Manifest(
        format_version=FORMAT_VERSION,
        portal_version=portal_version(),
        created_at=timezone.now().isoformat(),
        source=_source_facts(tenant, media),
        migrations=migrations,
        tables=tables,
        files=tuple(files),
        skipped_tables=tuple(sorted(t for t in columns if t in skip)),
        problems=tuple(problems),
        postgresql={"server_version": server_version, "csv_session": CSV_SESSION},
    )


def _export_table(
    cursor: Any, schema: str, table: str, columns: tuple[str, ...], target: Path
) -> TableDump:
    relative = f"db/{table}.csv"
    column_list = ", ".join(_q(c) for c in columns)
    sql = (
        f"COPY (SELECT {column_list} FROM {quote_schema_name(schema)}.{_q(table)}) "  # noqa: S608
        "TO STDOUT WITH (FORMAT csv, HEADER true)"
    )
    with _create(target / relative, PRIVATE_FILE, buffering=CHUNK) as out:
        writer = _HashingWriter(out)
        with cursor.copy(sql) as copy:
            for data in copy:
                writer.write(data)
        out.flush()
        os.fsync(out.fileno())
    return TableDump(
        name=table,
        file=relative,
        columns=columns,
        rows=int(cursor.rowcount),
        size=writer.size,
        sha256=writer.digest.hexdigest(),
    )


@dataclass
class _Indexed:
    """Instance files the index names, by absolute path: (SHA-256, size, SOP Instance UID)."""

    expected: dict[str, tuple[str, int, str]]
    problems: list[str]


def _indexed_files(raw: Any, schema: str, tenant: Tenant, media: list[tuple[Any, ...]]) -> _Indexed:
    root = Path(tenant.storage_root).resolve()
    problems: list[str] = []
    medium_roots: dict[int, Path] = {}
    for medium_id, name, kind, medium_root in media:
        if kind != "filesystem":
            problems.append(f"medium {name}: {kind} media are not exported")
            continue
        try:
            if not _inside(medium_root, str(root)):
                raise StoragePathError(medium_root)
            medium_roots[medium_id] = resolve_inside(root, medium_root)
        except StoragePathError:
            problems.append(
                f"medium {name}: {medium_root} is outside the tenant's root {root}; "
                "its files are not exported"
            )
    expected: dict[str, tuple[str, int, str]] = {}
    s = quote_schema_name(schema)
    with raw.cursor(name="portal_export_instances") as cursor:
        cursor.itersize = 10_000
        cursor.execute(
            f"SELECT medium_id, relative_path, sha256, size_bytes, sop_instance_uid "  # noqa: S608
            f"FROM {s}.studies_instance ORDER BY id"
        )
        for medium_id, relative, sha256, size, uid in cursor:
            if medium_id in medium_roots:
                path = os.path.normpath(medium_roots[medium_id] / relative)
                expected[path] = (sha256, size, uid)
    return _Indexed(expected=expected, problems=problems)


def _walk(root: Path, problems: list[str]) -> Iterator[Path]:
    """Regular files below `root`, sorted; symbolic links are reported, never followed."""
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == root and ".cache" in dirnames:
            dirnames.remove(".cache")  # copies fetched from object storage, not the archive
        for name in list(dirnames):
            if (here / name).is_symlink():
                problems.append(f"{(here / name).relative_to(root)}: symbolic link not exported")
                dirnames.remove(name)
        dirnames.sort()
        for name in sorted(filenames):
            path = here / name
            if name.startswith(".") and name.endswith(".tmp"):
                continue  # an ingest's temp file, never referenced
            if path.is_symlink():
                problems.append(f"{path.relative_to(root)}: symbolic link not exported")
            elif path.is_file():
                yield path


def _export_files(
    root: Path, target: Path, indexed: _Indexed, problems: list[str]
) -> list[FileEntry]:
    files: list[FileEntry] = []
    if not root.is_dir():
        problems.extend(f"{path}: indexed file is missing" for path in sorted(indexed.expected))
        return files
    resolved = root.resolve()
    for path in _walk(resolved, problems):
        relative = path.relative_to(resolved).as_posix()
        destination = target / relative
        _private_dirs(target, destination.parent)
        status = path.stat()
        size, sha256 = _copy_file(path, destination, PRIVATE_FILE)
        os.utime(destination, ns=(status.st_atime_ns, status.st_mtime_ns))
        files.append(
            FileEntry(path=relative, size=size, sha256=sha256, mtime_ns=status.st_mtime_ns)
        )
        known = indexed.expected.pop(os.path.normpath(path), None)
        if known is not None and (known[0], known[1]) != (sha256, size):
            problems.append(
                f"{relative}: SHA-256 {sha256} ({size} bytes) differs from the index's "
                f"{known[0]} ({known[1]} bytes) for instance {known[2]}"
            )
    for missing, (_sha, _size, uid) in sorted(indexed.expected.items()):
        problems.append(f"{os.path.relpath(missing, resolved)}: file of instance {uid} is missing")
    return files


def _source_facts(tenant: Tenant, media: list[tuple[Any, ...]]) -> dict[str, Any]:
    return {
        "slug": tenant.slug,
        "schema": tenant.schema_name,
        "name": tenant.name,
        "status": tenant.status,
        "ae_title": tenant.ae_title,
        "quota_bytes": tenant.quota_bytes,
        "quota_users": tenant.quota_users,
        "storage_root": str(Path(tenant.storage_root).resolve()),
        "created_at": tenant.created_at.isoformat(),
        "domains": [
            {"domain": d.domain, "is_primary": d.is_primary}
            for d in Domain.objects.filter(tenant=tenant).order_by("domain")
        ],
        "media": [
            {"id": medium_id, "name": name, "kind": kind, "root": root}
            for medium_id, name, kind, root in media
        ],
        "events": [
            {
                "at": event.at.isoformat(),
                "action": event.action,
                "from_status": event.from_status,
                "to_status": event.to_status,
                "actor": event.actor,
            }
            for event in TenantEvent.objects.filter(tenant=tenant).order_by("at", "id")
        ],
    }


def _write_manifest(target: Path, manifest: Manifest) -> None:
    """Last and atomically: a directory without manifest.json is an unfinished export."""
    for directory in (target / "db", target / "files", target):
        _fsync_dir(directory)
    temp = target / f".{MANIFEST}.tmp"
    with _create(temp, PRIVATE_FILE) as out:
        out.write(json.dumps(manifest.to_json(), indent=1, sort_keys=True).encode("utf-8"))
        out.write(b"\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, target / MANIFEST)
    _fsync_dir(target)


# -- verification ------------------------------------------------------------------------------


def manifest_verify(source: Path, *, check_files: bool = True) -> Manifest:
    """Read `source/manifest.json` and check every file it lists (size and SHA-256), and that
    the directory holds nothing else. Changes nothing; raises BackupError naming the files."""
    source = Path(source)
    path = source / MANIFEST
    if not path.is_file():
        raise BackupError(
            f"{source} has no {MANIFEST}: the export did not finish (or this is not an export "
            "directory), so it cannot be imported."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BackupError(f"{path} cannot be read: {error}.") from None
    manifest = Manifest.from_json(data)
    if not check_files:
        return manifest
    errors: list[str] = []
    listed: dict[str, tuple[int, str]] = {t.file: (t.size, t.sha256) for t in manifest.tables}
    listed |= {f"files/{f.path}": (f.size, f.sha256) for f in manifest.files}
    # Nothing below db/ and files/ may be a symbolic link (a crafted export could point a
    # directory at another tenant's files), and every listed file must resolve inside.
    on_disk, permissive = _export_tree(source, errors)
    links = len(errors)  # listed first: they explain the errors that follow
    base = source.resolve()
    for relative, (size, sha256) in listed.items():
        file = source / relative
        try:
            resolve_inside(base, file)
        except StoragePathError:
            errors.append(f"{relative}: lies outside the export directory")
            continue
        if relative not in on_disk:
            errors.append(f"{relative}: missing")
            continue
        actual_size, actual_sha = _hash_file(file)
        if (actual_size, actual_sha) != (size, sha256):
            errors.append(
                f"{relative}: SHA-256 {actual_sha} ({actual_size} bytes) does not match the "
                f"manifest's {sha256} ({size} bytes)"
            )
    errors += [f"{relative}: not listed in the manifest" for relative in on_disk - set(listed)]
    if errors:
        raise BackupError(
            f"The export in {source} does not match its manifest ({len(errors)} file(s)):\n"
            f"{_listing(errors[:links] + sorted(errors[links:]))}"
        )
    if permissive:
        example, mode = permissive[0]
        warning = (
            f"insecure permissions: {len(permissive)} path(s) of the export can be read or "
            f"written by others than its owner (e.g. {example}: {mode:o}); it holds password "
            f"hashes, TOTP secrets and patient data: run `chmod -R go-rwx {source}`"
        )
        logger.warning("%s", warning)
        manifest = replace(manifest, problems=(*manifest.problems, warning))
    return manifest


def _export_tree(source: Path, errors: list[str]) -> tuple[set[str], list[tuple[str, int]]]:
    """The regular files below `source/db` and `source/files` (relative to `source`), walked
    without following links; a symbolic link or special file anywhere is an error. Also the
    paths (the directory itself and manifest.json included) whose mode lets others in."""
    files: set[str] = set()
    permissive: list[tuple[str, int]] = []

    def check_mode(relative: str, status: os.stat_result) -> None:
        if stat.S_IMODE(status.st_mode) & 0o077:
            permissive.append((relative, stat.S_IMODE(status.st_mode)))

    for relative in (".", MANIFEST):
        with suppress(FileNotFoundError):
            check_mode(relative, os.lstat(source / relative))
    for top in ("db", "files"):
        try:
            status = os.lstat(source / top)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(status.st_mode):
            errors.append(f"{top}: not a directory (symbolic link or file)")
            continue
        check_mode(top, status)
        for dirpath, dirnames, filenames in os.walk(source / top, followlinks=False):
            here = Path(dirpath)
            for name in [*dirnames, *filenames]:
                path = here / name
                relative = path.relative_to(source).as_posix()
                status = os.lstat(path)
                if stat.S_ISLNK(status.st_mode):
                    errors.append(f"{relative}: a symbolic link (an export holds none)")
                elif stat.S_ISREG(status.st_mode):
                    files.add(relative)
                elif not stat.S_ISDIR(status.st_mode):
                    errors.append(f"{relative}: not a regular file")
                if not stat.S_ISLNK(status.st_mode):
                    check_mode(relative, status)
            # os.walk does not descend into links; say so explicitly all the same
            dirnames[:] = [d for d in dirnames if not (here / d).is_symlink()]
    return files, permissive


# -- import ------------------------------------------------------------------------------------


def default_ae_title(slug: str) -> str:
    return slug.upper()[:16]


def tenant_import(
    *,
    source: Path,
    slug: str,
    actor: str = "system",
    name: str | None = None,
    ae_title: str | None = None,
    storage_root: str | None = None,
) -> Tenant:
    """Restore the export in `source` as the new tenant `slug`: nothing or complete.

    Everything is checked before anything is created (see the module docstring); raises
    BackupError or ValidationError with the reason. Runs as the owner role (only an owner
    may switch the append-only tables' triggers off); portal/dbroles.py.
    """
    with as_owner():
        return _tenant_import(
            source=source,
            slug=slug,
            actor=actor,
            name=name,
            ae_title=ae_title,
            storage_root=storage_root,
        )


def _tenant_import(
    *,
    source: Path,
    slug: str,
    actor: str,
    name: str | None,
    ae_title: str | None,
    storage_root: str | None,
) -> Tenant:
    from tenants.services import default_storage_root, tenant_create

    tenant_connection().set_schema_to_public()  # tenants are made in public only
    if not owns_tables():
        raise BackupError(
            "Importing replaces rows of the append-only tables, which only the owner of the "
            "tables may do: set DATABASE_OWNER_URL (with docker compose, run the import in "
            "the migrate service)."
        )
    source = Path(source)
    try:
        validate_slug(slug)
    except ValidationError as error:
        raise BackupError(f"slug {slug!r}: {' '.join(error.messages)}") from None
    existing = Tenant.all_objects.filter(slug=slug).first()
    if existing is not None:
        raise BackupError(
            f"A tenant “{slug}” already exists ({existing.get_status_display()}); slugs are "
            "never reused, so import into a new one."
        )
    if schema_exists(schema_name_for(slug), case_sensitive=False):
        raise BackupError(f"A schema named {schema_name_for(slug)} already exists.")
    manifest = manifest_verify(source)
    _check_migrations(manifest)
    _check_structure(manifest)
    _check_media(manifest)
    ae = ae_title or default_ae_title(slug)
    try:
        validate_ae_title(ae)
    except ValidationError as error:
        raise BackupError(f"AE title {ae!r}: {' '.join(error.messages)}") from None
    holder = ae_title_holder(ae)
    if holder is not None:
        raise BackupError(
            f"The AE title {ae} belongs or belonged to tenant “{holder.slug}” (titles are "
            "never reused); choose another with --ae-title."
        )
    root = _validate_storage_root(str(storage_root or default_storage_root(slug)))
    if root.exists() and (root.is_symlink() or not root.is_dir() or any(root.iterdir())):
        raise BackupError(f"{root} already holds files; choose an empty or new directory.")

    with _import_lock(slug):
        _remove_stale_imports(slug, root.parent)
        # The files go into a hidden sibling first, renamed to `root` only once the rows
        # have committed: a killed import leaves nothing in `root` (the next one removes the
        # hidden directory), and a committed one never points at a half-copied root.
        staging = root.parent / f"{IMPORT_PREFIX}{slug}-{uuid.uuid4().hex}"
        root.parent.mkdir(parents=True, exist_ok=True)
        try:
            with transaction.atomic():
                creation = tenant_create(
                    slug=slug,
                    name=name or str(manifest.source["name"]),
                    admin_email="import@example.invalid",  # replaced by the imported users
                    ae_title=ae,
                    quota_bytes=int(manifest.source["quota_bytes"]),
                    quota_users=int(manifest.source["quota_users"]),
                    storage_root=str(staging),
                    created_by=actor,
                )
                tenant = creation.tenant
                # The clone granted its caller, the owner here: grant the processes' role.
                if (role := app_role()) is not None:
                    app_grants(role, [tenant.schema_name])
                Tenant.all_objects.filter(pk=tenant.pk).update(storage_root=str(root))
                tenant.storage_root = str(root)
                _import_files(source, manifest, staging)
                _load_tables(source, manifest, tenant.schema_name)
                with schema_context(tenant.schema_name):
                    # Into the final root: that is where the files are once committed.
                    _rewrite_paths(str(manifest.source["storage_root"]), root)
                    audit_record(
                        action="tenant.import",
                        actor_name=actor,
                        object_type="tenant",
                        object_id=slug,
                        details=_import_details(source, manifest),
                    )
                TenantEvent.objects.create(
                    tenant=tenant,
                    action="import",
                    actor=actor,
                    from_status=tenant.status,
                    to_status=tenant.status,
                    details=_import_details(source, manifest),
                )
                _fsync_dir(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        try:
            os.rename(staging, root)  # `root` is missing or empty: rename(2) replaces it
            _fsync_dir(root.parent)
        except OSError as error:
            raise BackupError(
                f"Tenant “{slug}” was imported, but its files could not be moved from "
                f"{staging} to {root} ({error.strerror or error}); move them there by hand."
            ) from None
    ContentType.objects.clear_cache()  # the imported ids replace the template's
    logger.info("tenant %s imported from %s by %s", slug, source, actor)
    return tenant


def _validate_storage_root(storage_root: str) -> Path:
    """The new tenant's root: inside PORTAL_STORAGE_ROOT, not the whole of it, not a hidden
    import directory, and apart from every other tenant's root (deleted and purged ones too:
    neither equal to one, nor inside one, nor around one)."""
    base = Path(settings.PORTAL_STORAGE_ROOT).resolve()
    try:
        root = resolve_inside(base, storage_root)
    except StoragePathError:
        raise BackupError(
            f"The storage root must lie inside {settings.PORTAL_STORAGE_ROOT}."
        ) from None
    if root == base:
        raise BackupError("A tenant needs its own directory, not the whole storage root.")
    if any(part.startswith(IMPORT_PREFIX) for part in root.relative_to(base).parts):
        raise BackupError(f"{root}: names starting with {IMPORT_PREFIX} are the import's own.")
    for other_slug, other_root in Tenant.all_objects.exclude(storage_root="").values_list(
        "slug", "storage_root"
    ):
        other = Path(other_root).resolve()
        if other == base:
            continue  # the public schema's row: it holds the whole storage root
        if root == other:
            relation = "is"
        elif other in root.parents:
            relation = "lies inside"
        elif root in other.parents:
            relation = "contains"
        else:
            continue
        raise BackupError(
            f"The storage root {root} {relation} the storage root of tenant “{other_slug}” "
            f"({other}); choose a directory of its own."
        )
    return root


def _lock_keys(slug: str) -> list[str]:
    return ["pacs-portal tenant import", slug]


@contextmanager
def _import_lock(slug: str) -> Iterator[None]:
    """A session-level advisory lock per slug, held for the whole import: a second import
    of the slug waits (then gives up), and a held lock marks a hidden directory as in use.
    A killed import's session ends, and with it the lock."""
    deadline = time.monotonic() + IMPORT_LOCK_WAIT
    with connection.cursor() as cursor:
        while True:
            cursor.execute(
                "SELECT pg_try_advisory_lock(hashtext(%s), hashtext(%s))", _lock_keys(slug)
            )
            if cursor.fetchone()[0]:
                break
            if time.monotonic() > deadline:
                raise BackupError(f"Another import into “{slug}” is running.")
            time.sleep(0.2)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_unlock(hashtext(%s), hashtext(%s))", _lock_keys(slug)
            )


def _remove_stale_imports(slug: str, *parents: Path) -> None:
    """Remove the hidden directories of imports that died (SIGKILL, power cut): those of
    `slug` (whose lock we hold), and those of other slugs that have no tenant row and whose
    import lock is free. One whose tenant exists (killed between the commit and the rename)
    is left alone and logged: its files belong to that tenant."""
    seen: set[Path] = set()
    for parent in (*parents, Path(settings.PORTAL_STORAGE_ROOT)):
        parent = parent.resolve()
        if parent in seen or not parent.is_dir():
            continue
        seen.add(parent)
        for entry in parent.iterdir():
            if not entry.name.startswith(IMPORT_PREFIX) or entry.is_symlink():
                continue
            if not entry.is_dir():
                continue
            owner = entry.name[len(IMPORT_PREFIX) :].rpartition("-")[0]
            if not owner:
                continue
            if owner != slug:
                if Tenant.all_objects.filter(slug=owner).exists():
                    logger.warning(
                        "%s: files of a committed import of %s that were never moved to its "
                        "storage root; move them by hand",
                        entry,
                        owner,
                    )
                    continue
                if not _lock_free(owner):
                    continue  # that import is running
            logger.warning("removing %s, left by an import that did not finish", entry)
            shutil.rmtree(entry, ignore_errors=True)


def _lock_free(slug: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(hashtext(%s), hashtext(%s))", _lock_keys(slug))
        if not cursor.fetchone()[0]:
            return False
        cursor.execute("SELECT pg_advisory_unlock(hashtext(%s), hashtext(%s))", _lock_keys(slug))
    return True


def _import_details(source: Path, manifest: Manifest) -> dict[str, Any]:
    return {
        "source_slug": manifest.source["slug"],
        "source_schema": manifest.source["schema"],
        "exported_at": manifest.created_at,
        "directory": str(source),
        "rows": manifest.rows,
        "files": len(manifest.files),
        "bytes": manifest.total_bytes,
    }


def _check_migrations(manifest: Manifest) -> None:
    """The export's migrations of the tenant apps must be exactly the template's: the new
    schema is cloned from the template, and rows of another state may not fit it.

    Only the tenant apps count (as in `provisioning.migration_state`): a schema's
    `django_migrations` also records the shared apps, whose tables are not in it, and
    `migrate_portal` leaves a tenant alone when only those changed.
    """
    labels = {app.rsplit(".", 1)[-1] for app in settings.TENANT_APPS}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT app, name FROM "  # noqa: S608 - a setting, not input
            f"{quote_schema_name(settings.PORTAL_TEMPLATE_SCHEMA)}.django_migrations"
        )
        template = {(str(a), str(n)) for a, n in cursor.fetchall() if a in labels}
    exported = {(app, name) for app, name in manifest.migrations if app in labels}
    on_disk = set(MigrationLoader(None, ignore_no_migrations=True).graph.nodes)

    def names(keys: Iterable[tuple[str, str]]) -> str:
        listed = sorted(keys)
        text = ", ".join(f"{app}.{name}" for app, name in listed[:5])
        return text + (f" and {len(listed) - 5} more" if len(listed) > 5 else "")

    if unknown := exported - on_disk:
        raise BackupError(
            f"The export was made by a newer portal ({manifest.portal_version}): migrations "
            f"{names(unknown)} are unknown here. Upgrade this portal before importing."
        )
    if behind := exported - template:
        raise BackupError(
            f"The tenant template lacks migrations {names(behind)} that the export has; "
            "run `manage.py migrate_portal` first."
        )
    if older := template - exported:
        raise BackupError(
            f"The export is from an older migration state: {names(older)} had not been "
            f"applied. Import it with the portal version that made it "
            f"({manifest.portal_version}), or restore it there, migrate, and export again."
        )


def _check_structure(manifest: Manifest) -> None:
    """The template (what the new schema is cloned from) has exactly the exported tables and
    columns, so the CSV rows fit the new schema."""
    if not template_is_current():
        raise BackupError("The tenant template is not migrated; run `manage.py migrate_portal`.")
    with connection.cursor() as cursor:
        template = _schema_columns(cursor, settings.PORTAL_TEMPLATE_SCHEMA)
    skip = skipped_tables()
    wanted = {t: set(c) for t, c in template.items() if t not in skip}
    exported = {t.name: set(t.columns) for t in manifest.tables}
    errors = [f"table {t} is not in the export" for t in sorted(set(wanted) - set(exported))]
    errors += [f"table {t} is unknown here" for t in sorted(set(exported) - set(wanted))]
    for table in sorted(set(wanted) & set(exported)):
        if wanted[table] != exported[table]:
            errors.append(
                f"table {table}: columns differ (export only: "
                f"{sorted(exported[table] - wanted[table])}, here only: "
                f"{sorted(wanted[table] - exported[table])})"
            )
    if errors:
        raise BackupError(
            "The export does not fit this portal's tenant schema:\n" + _listing(errors)
        )


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _check_media(manifest: Manifest) -> None:
    """Every filesystem medium lies below the exported root, so it can be moved below the new
    one (the export reports the others as problems)."""
    old = str(manifest.source["storage_root"])
    outside = [
        f"medium {m['name']}: {m['root']}"
        for m in manifest.source.get("media", [])
        if m.get("kind") == "filesystem" and not _inside(str(m["root"]), old)
    ]
    if outside:
        raise BackupError(
            f"These media lie outside the exported storage root {old} and cannot be moved:\n"
            + _listing(outside)
        )


def _import_files(source: Path, manifest: Manifest, new_root: Path) -> None:
    for entry in manifest.files:
        relative = _safe_relative(entry.path)
        try:
            destination = resolve_inside(new_root, new_root / relative)
        except StoragePathError:
            raise BackupError(f"files/{entry.path} would land outside {new_root}.") from None
        destination.parent.mkdir(parents=True, exist_ok=True)
        size, sha256 = _copy_file(source / "files" / relative, destination)
        if (size, sha256) != (entry.size, entry.sha256):
            raise BackupError(
                f"files/{entry.path} changed while it was imported (SHA-256 {sha256}, manifest "
                f"{entry.sha256}); nothing was imported."
            )
        os.utime(destination, ns=(entry.mtime_ns, entry.mtime_ns))


def _load_tables(source: Path, manifest: Manifest, schema: str) -> None:
    """Replace the provisioned rows of the new schema with the exported ones (see the module
    docstring on the append-only tables' triggers)."""
    s = quote_schema_name(schema)
    with connection.cursor() as django_cursor:
        cursor = django_cursor.cursor  # psycopg's own, for COPY
        _set_csv_session(cursor)
        # Check what provisioning queued now: TRUNCATE refuses tables with pending events.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        cursor.execute(_TABLES, [schema])
        tables = [row[0] for row in cursor.fetchall() if row[0] != "django_migrations"]
        cursor.execute(_TRIGGER_TABLES, [schema])
        guarded = [row[0] for row in cursor.fetchall() if row[0] in tables]
        for table in guarded:
            cursor.execute(f"ALTER TABLE {s}.{_q(table)} DISABLE TRIGGER USER")
        cursor.execute("TRUNCATE " + ", ".join(f"{s}.{_q(t)}" for t in tables))
        for dump in manifest.tables:
            _load_table(cursor, source, dump, s)
        # Foreign keys of the loaded rows are checked here, not at the commit.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for table in guarded:
            cursor.execute(f"ALTER TABLE {s}.{_q(table)} ENABLE TRIGGER USER")
        cursor.execute(_IDENTITY_COLUMNS, [schema])
        for table, column in cursor.fetchall():
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence(%s, %s), "  # noqa: S608 - catalogue names
                f"coalesce((SELECT max({_q(column)}) FROM {s}.{_q(table)}), 0) + 1, false)",
                [f"{s}.{_q(table)}", column],
            )
        for dump in manifest.tables:
            cursor.execute(f"SELECT count(*) FROM {s}.{_q(dump.name)}")  # noqa: S608
            count = cursor.fetchone()[0]
            if count != dump.rows:
                raise BackupError(
                    f"{dump.file}: {count} rows loaded, the manifest says {dump.rows}."
                )


def _load_table(cursor: Any, source: Path, dump: TableDump, s: str) -> None:
    with (source / dump.file).open("rb") as reader:
        digest = hashlib.sha256()
        header = reader.readline()
        digest.update(header)
        columns = tuple(next(csv.reader(io.StringIO(header.decode("utf-8")))))
        if columns != dump.columns:
            raise BackupError(f"{dump.file}: its header does not match the manifest's columns.")
        column_list = ", ".join(_q(c) for c in columns)
        with cursor.copy(
            f"COPY {s}.{_q(dump.name)} ({column_list}) FROM STDIN WITH (FORMAT csv)"
        ) as copy:
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
                copy.write(chunk)
    if digest.hexdigest() != dump.sha256:
        raise BackupError(f"{dump.file} changed while it was imported; nothing was imported.")


def _rewrite_paths(old_root: str, new_root: Path) -> None:
    """Absolute paths in the rows point into the source's root: point them into the new one.

    Then every medium's root and every staged or quarantined path must lie inside the new
    root: a crafted backup could name any path (another tenant's files, `<old>/../x`), and
    the ingest's retry and processing move and remove the files these columns name."""
    from studies.models import IngestItem, MediumKind, StorageMedium

    old = old_root.rstrip("/")
    new = str(new_root.resolve())
    for medium in StorageMedium.objects.filter(kind=MediumKind.FILESYSTEM):
        if not _inside(medium.root, old):
            raise BackupError(
                f"medium {medium.name}: {medium.root} is not inside the exported root {old}."
            )
        root = new + medium.root[len(old) :]
        StorageMedium.objects.filter(pk=medium.pk).update(root=root)
    with connection.cursor() as cursor:
        for column in ("staged_path", "quarantine_path"):
            table = IngestItem._meta.db_table
            cursor.execute(
                f"UPDATE {_q(table)} SET {_q(column)} = %s || substr({_q(column)}, %s) "  # noqa: S608
                f"WHERE starts_with({_q(column)}, %s)",
                [new, len(old) + 1, old + "/"],
            )
    outside: list[str] = []

    def check(table: str, pk: Any, column: str, value: str) -> None:
        try:
            resolve_inside(new, value)
        except (StoragePathError, OSError, ValueError):
            outside.append(f"{table} id={pk} {column}: {value!r}")

    media = StorageMedium.objects.order_by("pk").values_list("pk", "root")
    for pk, medium_root in media:
        check(StorageMedium._meta.db_table, pk, "root", medium_root)
    items = (
        IngestItem.objects.exclude(staged_path="", quarantine_path="")
        .order_by("pk")
        .values_list("pk", "staged_path", "quarantine_path")
    )
    for pk, staged, quarantined in items.iterator(chunk_size=10_000):
        for column, value in (("staged_path", staged), ("quarantine_path", quarantined)):
            if value:
                check(IngestItem._meta.db_table, pk, column, value)
    if outside:
        raise BackupError(
            f"The export names paths outside the new tenant's storage root {new} (a damaged "
            "or crafted backup); nothing was imported:\n" + _listing(outside)
        )
