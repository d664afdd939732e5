"""What staging and quarantine hold: bytes the tenant's quota counts besides its media.

Files wait in staging until processed, and refused files stay in quarantine for 30 days;
both lie on the disk every tenant shares, so both count against the tenant's quota
(otherwise anyone who can send could fill that disk with refusals). On top of the quota,
a tenant keeps at most `PORTAL_QUARANTINE_BYTES_PER_DAY` of refused files per 24 hours;
past it a refused file's row (reason, SHA-256) is kept but not its bytes.

Both figures are sums over two partial indexes (pending items, items with kept bytes), so
they cost the same on a tenant with a million processed items as on an empty one.
"""

import datetime
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone

from portal.units import size_text
from studies.ingest.outcomes import IngestRefused, Refusal
from studies.ingest.sql import Statements, execute, table
from studies.models import IngestItem, ItemOutcome, StorageMedium

DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Held:
    staging_bytes: int = 0
    staging_files: int = 0
    quarantine_bytes: int = 0
    quarantine_files: int = 0
    kept_today_bytes: int = 0  # of the quarantine, kept in the last 24 hours


def held_read(reads: Statements, *, now: datetime.datetime | None = None) -> int:
    """Queue the read of what staging and quarantine hold; `held_of` reads its result."""
    since = (now or timezone.now()) - DAY
    items = table(IngestItem)
    return reads.add(
        "SELECT "
        "COALESCE(SUM(size_bytes) FILTER (WHERE outcome = %s), 0), "
        "COUNT(*) FILTER (WHERE outcome = %s), "
        "COALESCE(SUM(kept_bytes) FILTER (WHERE kept_bytes > 0), 0), "
        "COUNT(*) FILTER (WHERE kept_bytes > 0), "
        "COALESCE(SUM(kept_bytes) FILTER (WHERE kept_bytes > 0 AND processed_at >= %s), 0) "
        f"FROM {items} WHERE outcome = %s OR kept_bytes > 0",
        [ItemOutcome.PENDING, ItemOutcome.PENDING, since, ItemOutcome.PENDING],
    )


def held_of(rows: list[tuple[Any, ...]]) -> Held:
    return Held(*(int(value) for value in rows[0]))


def held() -> Held:
    """What the active tenant's staging and quarantine hold now."""
    reads = Statements()
    at = held_read(reads)
    return held_of(reads.run()[at])


class QuarantineAllowance:
    """How many more refused bytes the tenant may keep today, as one batch spends them."""

    def __init__(self, kept_today_bytes: int, *, limit: int | None = None) -> None:
        self.kept = kept_today_bytes
        self.limit = int(settings.PORTAL_QUARANTINE_BYTES_PER_DAY) if limit is None else limit

    def take(self, size: int) -> bool:
        """Whether a refused file of `size` bytes may be kept (and count it if so)."""
        if self.kept + size > self.limit:
            return False
        self.kept += size
        return True

    @property
    def refusal_note(self) -> str:
        return (
            f" The tenant's quarantine took its {size_text(self.limit)} for 24 hours, so "
            "the file itself was not kept (its SHA-256 is)."
        )


class StagingRoom:
    """The quota as files arrive: what the media, staging and quarantine hold, read once
    on the first file, plus what this staging wrote since. Checked before each file is
    written, so a burst of uploads cannot pile up in staging past the quota; processing
    checks the quota again, exactly, in its transaction."""

    def __init__(self, quota_bytes: int) -> None:
        self.quota_bytes = quota_bytes
        self._base: tuple[int, Held] | None = None
        self.written = 0

    def _read(self) -> tuple[int, Held]:
        if self._base is None:
            (stored,) = execute(f"SELECT COALESCE(SUM(used_bytes), 0) FROM {table(StorageMedium)}")
            self._base = (int(stored[0]), held())
        return self._base

    def remaining(self) -> int:
        stored, now = self._read()
        taken = stored + now.staging_bytes + now.quarantine_bytes + self.written
        return self.quota_bytes - taken

    def refusal(self) -> IngestRefused:
        stored, now = self._read()
        return IngestRefused(
            Refusal.QUOTA,
            f"The tenant's storage quota ({size_text(self.quota_bytes)}) is used up: "
            f"{size_text(stored)} stored, {size_text(now.quarantine_bytes)} in "
            f"quarantine and {size_text(now.staging_bytes + self.written)} waiting in "
            "staging. The file was not kept; send it again once room is made.",
        )
