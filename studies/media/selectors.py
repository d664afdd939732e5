"""Reads on the tenant's storage media: the list and the usage chart against the quota."""

import shutil
from dataclasses import dataclass

from django.conf import settings
from django.db.models import QuerySet

from portal.units import size_text
from studies.ingest.held import Held, held
from studies.models import MediumKind, MediumStatus, StorageMedium

# Distinct segment colours of the usage chart (classes seg-0 ... seg-7 in portal.css), and
# the two of what the quota counts besides the media (seg-quarantine, seg-staging).
CHART_COLOURS = 8
QUARANTINE, STAGING = "quarantine", "staging"


def medium_list(*, status: str | None = None, kind: str | None = None) -> QuerySet[StorageMedium]:
    """Media of the active tenant, highest priority first, optionally of one status or kind."""
    media = StorageMedium.objects.all()
    if status:
        media = media.filter(status=status)
    if kind:
        media = media.filter(kind=kind)
    return media


@dataclass(frozen=True)
class ChartSegment:
    name: str
    bytes: int
    x: float
    width: float
    colour: int | str


@dataclass(frozen=True)
class ChartBar:
    label: str
    segments: list[ChartSegment]


@dataclass(frozen=True)
class StorageSummary:
    """Totals of every medium and two stacked bars against the scale (usually the quota).
    The quota counts the media's files and what staging and quarantine hold."""

    used_bytes: int
    file_count: int
    capacity_bytes: int
    quota_bytes: int
    scale_bytes: int
    used: list[ChartSegment]
    allocated: list[ChartSegment]
    held: Held
    quarantine_day_bytes: int
    warnings: tuple[str, ...] = ()  # figures that cannot all come true

    @property
    def counted_bytes(self) -> int:
        """What the quota counts: the media, staging and quarantine."""
        return self.used_bytes + self.held.staging_bytes + self.held.quarantine_bytes

    @property
    def quota_x(self) -> float:
        """Where the quota falls on the bars (at their end unless something exceeds it)."""
        return 100.0 * self.quota_bytes / self.scale_bytes

    @property
    def bars(self) -> list[ChartBar]:
        return [ChartBar("Used", self.used), ChartBar("Allocated capacity", self.allocated)]

    @property
    def used_percent_of_quota(self) -> float:
        return 100.0 * self.counted_bytes / self.quota_bytes if self.quota_bytes else 0.0

    @property
    def kept_today_percent(self) -> float:
        limit = self.quarantine_day_bytes
        return 100.0 * self.held.kept_today_bytes / limit if limit else 0.0

    @property
    def allocated_percent_of_quota(self) -> float:
        return 100.0 * self.capacity_bytes / self.quota_bytes if self.quota_bytes else 0.0


def _stack(values: list[tuple[str, int, int | str]], scale: int) -> list[ChartSegment]:
    segments, x = [], 0.0
    for name, value, colour in values:
        width = 100.0 * value / scale if scale else 0.0
        segments.append(ChartSegment(name=name, bytes=value, x=x, width=width, colour=colour))
        x += width
    return segments


def storage_summary(*, quota_bytes: int) -> StorageSummary:
    """Measured usage per medium and the capacity that non-retired media take of the quota.

    Retired media no longer count against the quota but keep their bytes until they are
    emptied, so they stay in the "used" bar.
    """
    media = list(StorageMedium.objects.order_by("-priority", "name"))
    colours = {m.pk: index % CHART_COLOURS for index, m in enumerate(media)}
    used = sum(m.used_bytes for m in media)
    active = [m for m in media if m.status != MediumStatus.RETIRED]
    capacity = sum(m.capacity_bytes for m in active)
    now = held()
    counted = used + now.staging_bytes + now.quarantine_bytes
    scale = max(quota_bytes, capacity, counted, 1)
    used_values: list[tuple[str, int, int | str]] = [
        (m.name, m.used_bytes, colours[m.pk]) for m in media
    ]
    if now.quarantine_bytes:
        used_values.append(("Quarantine", now.quarantine_bytes, QUARANTINE))
    if now.staging_bytes:
        used_values.append(("Staging", now.staging_bytes, STAGING))
    return StorageSummary(
        used_bytes=used,
        file_count=sum(m.file_count for m in media),
        capacity_bytes=capacity,
        quota_bytes=quota_bytes,
        scale_bytes=scale,
        used=_stack(used_values, scale),
        allocated=_stack([(m.name, m.capacity_bytes, colours[m.pk]) for m in active], scale),
        held=now,
        quarantine_day_bytes=int(settings.PORTAL_QUARANTINE_BYTES_PER_DAY),
        warnings=tuple(_warnings(active, capacity=capacity, quota_bytes=quota_bytes)),
    )


def _warnings(active: list[StorageMedium], *, capacity: int, quota_bytes: int) -> list[str]:
    """Where the figures promise more than can be stored: media allowed more than the quota,
    and a medium allowed more than its file system has free."""
    found = []
    if quota_bytes and capacity > quota_bytes:
        found.append(
            f"The media are allowed {size_text(capacity)} together, "
            f"{100 * capacity / quota_bytes:.0f} % of the tenant's quota of "
            f"{size_text(quota_bytes)}: storing stops at the quota."
        )
    for medium in active:
        if medium.status != MediumStatus.ONLINE or medium.kind != MediumKind.FILESYSTEM:
            continue
        try:
            free = shutil.disk_usage(medium.root).free
        except OSError:
            continue  # the probe reports an unreachable root
        room = medium.capacity_bytes - medium.used_bytes
        if room > free:
            found.append(
                f"Medium “{medium.name}” may still take {size_text(room)}, but its file "
                f"system has {size_text(free)} free."
            )
    return found
