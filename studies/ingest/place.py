"""Placing: the quota and the writable media, read once per batch, and each accepted file
linked into place (or uploaded, on object storage) on the first medium with room, failing
over to the next.

An indexed file is never overwritten: a replacement gets a name versioned by its SHA-256.
The index stage holds a lock per SOP Instance UID while files are placed, so a file found at
a name no row points at is an orphan of a crashed run: the same bytes are reused (a retry
finds its own earlier file), other bytes are replaced.
"""

import logging
from pathlib import Path

from studies.ingest.outcomes import IngestRefused, Refusal
from studies.ingest.parse import Candidate
from studies.media.objectstore import ObjectStore, StoredObject
from studies.models import MediumKind, MediumStatus, StorageMedium
from studies.storage import (
    StoragePathError,
    file_sha256,
    instance_relative_path,
    place_new_file,
    replace_orphan,
    resolve_inside,
)

logger = logging.getLogger(__name__)


def versioned_relative_path(relative: str, sha256: str) -> str:
    return f"{relative.removesuffix('.dcm')}.{sha256[:16]}.dcm"


class Room:
    """The tenant's quota and media as one batch sees them (read in its transaction)."""

    def __init__(
        self, *, media: list[StorageMedium], quota_bytes: int, quarantine_bytes: int = 0
    ) -> None:
        self.quota_bytes = quota_bytes
        self.quarantine_bytes = quarantine_bytes  # refused files count against the quota too
        self.used_bytes = sum(medium.used_bytes for medium in media) + quarantine_bytes
        self.writable = sorted(
            (m for m in media if m.status == MediumStatus.ONLINE and m.kind in MediumKind.values),
            key=lambda m: (-m.priority, m.pk),
        )
        self.growth: dict[int, int] = {}  # bytes this batch adds per medium
        self._failed: dict[int, str] = {}
        self.directories: set[Path] = set()
        self._stores: dict[int, ObjectStore] = {}

    def quota_check(self, growth: int) -> None:
        """Refuse `growth` more bytes if they would pass the quota (`quota_claim` counts them)."""
        if growth > 0 and self.used_bytes + growth > self.quota_bytes:
            raise IngestRefused(
                Refusal.QUOTA,
                f"The tenant's storage quota ({self.quota_bytes} bytes) is used up: "
                f"{self.used_bytes - self.quarantine_bytes} bytes are stored, "
                f"{self.quarantine_bytes} are held in quarantine and this file needs "
                f"{growth} more. "
                "Nothing was stored; the file is kept in quarantine.",
            )

    def quota_claim(self, growth: int) -> None:
        self.used_bytes += growth

    def medium_change(self, medium_id: int, delta: int) -> None:
        self.growth[medium_id] = self.growth.get(medium_id, 0) + delta

    def place(self, candidate: Candidate, *, occupied: tuple[int, str] | None = None) -> None:
        """Link the candidate's staged file onto a medium; sets medium and relative path.
        `occupied` is the (medium, path) of the indexed copy this one replaces."""
        parsed = candidate.parsed
        assert parsed is not None
        relative = instance_relative_path(
            study_uid=parsed.study_instance_uid,
            series_uid=parsed.series_instance_uid,
            sop_uid=parsed.sop_instance_uid,
        )
        for medium in self.writable:
            if medium.pk in self._failed or not self._has_room(medium, candidate.size):
                continue
            try:
                self._place_on(medium, candidate, relative, occupied)
            except (OSError, StoragePathError) as error:
                self._failed[medium.pk] = (
                    f"{medium.name}: {getattr(error, 'strerror', '') or error}"
                )
                logger.warning("medium %s failed a write: %s", medium.name, error)
                continue
            self.medium_change(medium.pk, candidate.size)
            return
        detail = "; ".join(self._failed.values()) or "every online medium is full or offline"
        raise IngestRefused(
            Refusal.NO_MEDIUM,
            f"No storage medium could take the file ({detail}). The file is kept in quarantine.",
        )

    def _has_room(self, medium: StorageMedium, size: int) -> bool:
        used = medium.used_bytes + self.growth.get(medium.pk, 0) + size
        return used * 100 <= medium.capacity_bytes * medium.high_watermark

    def _place_on(
        self,
        medium: StorageMedium,
        candidate: Candidate,
        relative: str,
        occupied: tuple[int, str] | None,
    ) -> None:
        if medium.kind == MediumKind.S3:
            self._upload_to(medium, candidate, relative, occupied)
            return
        root = Path(medium.root)
        for name in (relative, versioned_relative_path(relative, candidate.sha256)):
            if occupied == (medium.pk, name):
                continue  # the indexed copy this one replaces stays until the commit
            target = resolve_inside(root, root / name)
            created: Path | None = target
            try:
                place_new_file(candidate.staged, target)
            except FileExistsError:
                same = (
                    target.stat().st_size == candidate.size
                    and file_sha256(target) == candidate.sha256
                )
                if same:  # ours from an earlier attempt, or an orphan with these very bytes
                    created = target if candidate.created_file == target else None
                else:
                    replace_orphan(candidate.staged, target)
            candidate.medium, candidate.relative_path = medium, name
            candidate.created_file = created
            self.directories.add(target.parent)
            return
        raise FileExistsError(f"{relative}: no free name")

    def _upload_to(
        self,
        medium: StorageMedium,
        candidate: Candidate,
        relative: str,
        occupied: tuple[int, str] | None,
    ) -> None:
        """Upload to object storage; returns once the store confirmed the object. No row
        points at the name (the same lock rule as files), so an orphan is simply replaced."""
        name = relative
        if occupied == (medium.pk, relative):
            name = versioned_relative_path(relative, candidate.sha256)
        store = self._stores.get(medium.pk)
        if store is None:
            store = self._stores[medium.pk] = ObjectStore(medium)
        store.put_file(candidate.staged, name, sha256=candidate.sha256, size=candidate.size)
        candidate.medium, candidate.relative_path = medium, name
        candidate.created_file = StoredObject(store, name)
