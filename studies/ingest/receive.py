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
from typing import IO, TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from portal.schemas import current_tenant
from studies.ingest.held import QuarantineAllowance, StagingRoom, held
from studies.ingest.outcomes import IngestRefused, Refusal
from studies.ingest.sql import Statements, table, values_sql
from studies.models import IngestItem, IngestJob, ItemOutcome
from studies.storage import (
    StagingLimitExceeded,
    copy_durably,
    fsync_directory,
    inside_tenant_root,
    keep_head,
    quarantine_dir,
    staging_dir,
    write_stream,
)

if TYPE_CHECKING:
    from accounts.models import ApiToken

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def printable_label(text: str, limit: int) -> str:
    """A label from any channel (form, query string, a peer's AE title), safe to store and
    show: control characters (NUL among them, which PostgreSQL text refuses) become spaces."""
    return "".join(c if c.isprintable() else " " for c in text[:limit]).strip()


def ingest_job_create(
    *,
    source: str,
    created_by: Any = None,
    description: str = "",
    token: "ApiToken | None" = None,
) -> IngestJob:
    job = IngestJob.objects.create(
        source=source,
        created_by=created_by,
        token=token,
        description=printable_label(description, 255),
    )
    staging_dir(job.pk).mkdir(parents=True, exist_ok=True)
    return job


FLUSH_EVERY = 200  # staged rows kept in memory before they are written (progress stays live)


class JobStaging:
    """Stages many files into one job: each is written once as it arrives (hashed, size
    limited, fsynced) under a fresh name, and the rows of all of them are inserted together,
    with one update of the job's counters, every `FLUSH_EVERY` files and when the staging
    closes. Profiled on CT files, the row and counter round trips of one file at a time
    cost more than its write and fsync."""

    def __init__(self, job: IngestJob, *, claimed: bool = False, quota: bool = True) -> None:
        """`claimed`: the rows carry their first processing attempt, for a caller that
        processes them right after the flush (`ingest_staged_process`). `quota`: refuse
        files that would pass the tenant's quota counting what staging and quarantine
        hold (the gateway, which indexes each file in the transaction that stages it,
        leaves that to the index)."""
        self.job = job
        self.folder = staging_dir(job.pk)
        self._attempts = 1 if claimed else 0
        self._rows: list[IngestItem] = []
        self.room = StagingRoom(current_tenant().quota_bytes) if quota else None

    def __enter__(self) -> "JobStaging":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.flush()  # what was staged before an error is counted, so the job adds up

    def stage(
        self, *, name: str, stream: IO[bytes] | Iterable[bytes], max_bytes: int | None = None
    ) -> IngestItem:
        """Write one incoming file to the job's staging folder; its row follows at the flush."""
        limit = max_bytes or settings.PORTAL_MAX_INSTANCE_BYTES
        room = self.room.remaining() if self.room is not None else limit
        if room <= 0:
            return self._refuse_room(name)
        path = self.folder / f"{uuid.uuid4().hex}.dcm"  # never derived from what the sender said
        try:
            written = write_stream(path, stream, limit=min(limit, room))
        except StagingLimitExceeded:
            if room < limit:
                return self._refuse_room(name)
            return self.refuse(
                name=name, code=Refusal.TOO_LARGE, reason=f"The file is larger than {limit} bytes."
            )
        except IngestRefused as refused:  # a channel's stream refusing its own bytes
            return self.refuse(name=name, code=refused.code, reason=refused.message)
        except OSError as error:
            # A full or failing staging disk: the item is closed, so its job can close too.
            reason = f"The file could not be written to staging: {error.strerror or error}."
            self.refuse(name=name, code=Refusal.STAGING_FAILED, reason=reason)
            raise
        if self.room is not None:
            self.room.written += written.size
        return self._add(
            IngestItem(
                job=self.job,
                name=name[:512],
                staged_path=str(path),
                size_bytes=written.size,
                sha256=written.sha256,
            )
        )

    def adopt(self, *, name: str, path: Path, size: int, sha256: str) -> IngestItem:
        """Take a file already received and hashed in this tenant's storage (the gateway's):
        it is renamed into the job's staging folder and fsynced, never copied; a file past
        the quota is removed and refused."""
        if self.room is not None:
            if size > self.room.remaining():
                path.unlink(missing_ok=True)
                return self._refuse_room(name)
            self.room.written += size
        target = self.folder / f"{uuid.uuid4().hex}.dcm"
        os.replace(path, target)
        with target.open("rb") as stream:
            os.fsync(stream.fileno())
        return self._add(
            IngestItem(
                job=self.job,
                name=name[:512],
                staged_path=str(target),
                size_bytes=size,
                sha256=sha256,
            )
        )

    def refuse(self, *, name: str, code: str, reason: str) -> IngestItem:
        """Record a file refused before it could be staged (e.g. an unsafe zip entry)."""
        return self._add(
            IngestItem(
                job=self.job,
                name=name[:512],
                outcome=ItemOutcome.REJECTED,
                reason_code=str(code),
                reason=reason,
                processed_at=timezone.now(),
            )
        )

    def _refuse_room(self, name: str) -> IngestItem:
        assert self.room is not None
        refused = self.room.refusal()
        return self.refuse(name=name, code=refused.code, reason=refused.message)

    def _add(self, item: IngestItem) -> IngestItem:
        if item.outcome == ItemOutcome.PENDING:
            item.attempts = self._attempts
        self._rows.append(item)
        if len(self._rows) >= FLUSH_EVERY:
            self.flush()
        return item

    def flush(self) -> None:
        """Insert the staged rows and count them on the job, in one round trip (their
        primary keys are set on the objects returned)."""
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        rejected = sum(1 for row in rows if row.outcome == ItemOutcome.REJECTED)
        values, params = values_sql(
            [[getattr(row, name) for name in _ITEM_COLUMNS] for row in rows], _ITEM_CASTS
        )
        columns = ", ".join(connection.ops.quote_name(name) for name in _ITEM_COLUMNS)
        statements = Statements()
        inserted = statements.add(
            f"INSERT INTO {table(IngestItem)} ({columns}) VALUES {values} RETURNING id", params
        )
        statements.add(
            f"UPDATE {table(IngestJob)} SET total = total + %s, rejected = rejected + %s "
            "WHERE id = %s",
            [len(rows), rejected, self.job.pk],
        )
        with transaction.atomic(savepoint=False):  # inside a caller's transaction: its part
            ids = statements.run()[inserted]
        # PostgreSQL returns an INSERT's rows in the order of its VALUES (bulk_create, too,
        # relies on it).
        for row, (pk,) in zip(rows, ids, strict=True):
            row.pk = pk
            row._state.adding, row._state.db = False, connection.alias


# The columns a staged row is inserted with, and their SQL types.
_ITEM_FIELDS = [
    ("job_id", "bigint"),
    ("name", "varchar"),
    ("staged_path", "varchar"),
    ("size_bytes", "bigint"),
    ("outcome", "varchar"),
    ("reason", "text"),
    ("reason_code", "varchar"),
    ("sop_instance_uid", "varchar"),
    ("study_instance_uid", "varchar"),
    ("quarantine_path", "varchar"),
    ("kept_bytes", "bigint"),
    ("sha256", "varchar"),
    ("attempts", "smallint"),
    ("processed_at", "timestamptz"),
]
_ITEM_COLUMNS = [name for name, _cast in _ITEM_FIELDS]
_ITEM_CASTS = [cast for _name, cast in _ITEM_FIELDS]


def ingest_item_stage(
    *, job: IngestJob, name: str, stream: IO[bytes] | Iterable[bytes], max_bytes: int | None = None
) -> IngestItem:
    """Stage one file (see `JobStaging` for many)."""
    with JobStaging(job) as staging:
        return staging.stage(name=name, stream=stream, max_bytes=max_bytes)


def quarantine_target(item_id: int, job_id: int, name: str, *, root: Path | None = None) -> Path:
    """Where a refused item's file is kept: `.quarantine/<job>/<item>-<safe name>`."""
    safe = _UNSAFE_NAME.sub("_", Path(name).name)[-100:] or "file"
    folder = quarantine_dir(job_id) if root is None else root / ".quarantine" / str(job_id)
    return folder / f"{item_id}-{safe}"


# A refused file that is not DICOM at all is kept only as its first KiB (its SHA-256 is on
# the item): enough to see what was sent, not a way to fill the disk all tenants share.
NOT_DICOM_KEPT_BYTES = 1024
HEAD_ONLY_CODES = frozenset({Refusal.NOT_DICOM})


def quarantine_size(size: int, *, code: str) -> int:
    """The bytes quarantine keeps of a refused file of `size` bytes."""
    return min(size, NOT_DICOM_KEPT_BYTES) if code in HEAD_ONLY_CODES else size


def quarantine_keep(
    staged: Path, target: Path, *, code: str, allowance: QuarantineAllowance
) -> int | None:
    """Put a refused item's staged file in quarantine at `target` (the staged file stays;
    the caller removes it): linked whole, or only its first KiB when it is not DICOM.
    Returns the bytes kept, or None when the tenant's daily allowance has no room for them."""
    kept = quarantine_size(staged.stat().st_size, code=code)
    if not allowance.take(kept):
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    if code in HEAD_ONLY_CODES:
        keep_head(staged, target, limit=NOT_DICOM_KEPT_BYTES)
        return kept
    try:
        os.link(staged, target)
    except FileExistsError:
        pass  # linked by an earlier attempt of the same batch
    except OSError:
        copy_durably(staged, target)
    return kept


def ingest_item_reject(*, item: IngestItem, code: str, reason: str) -> None:
    """Refuse a pending item before processing: a staged file goes to quarantine with the
    reason; an item whose staging broke off (no staged file) is just counted as rejected."""
    staged = Path(item.staged_path) if item.staged_path else None
    target, kept = "", None
    if staged is not None and inside_tenant_root(staged) and staged.is_file():
        destination = quarantine_target(item.pk, item.job_id, item.name)
        allowance = QuarantineAllowance(held().kept_today_bytes)
        kept = quarantine_keep(staged, destination, code=str(code), allowance=allowance)
        if kept is not None:
            fsync_directory(destination.parent)
            target = str(destination)
        else:
            reason += allowance.refusal_note
        staged.unlink()
    with transaction.atomic():
        updated = IngestItem.objects.filter(pk=item.pk, outcome=ItemOutcome.PENDING).update(
            outcome=ItemOutcome.REJECTED,
            reason_code=str(code),
            reason=reason,
            quarantine_path=target,
            kept_bytes=kept or 0,
            processed_at=timezone.now(),
        )
        if updated:
            IngestJob.objects.filter(pk=item.job_id).update(rejected=F("rejected") + 1)
