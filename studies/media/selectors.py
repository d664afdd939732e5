"""Reads on the tenant's storage media: the list and the usage chart against the quota."""

from dataclasses import dataclass

from django.db.models import QuerySet

from studies.models import MediumStatus, StorageMedium

# Distinct segment colours of the usage chart (classes seg-0 ... seg-7 in portal.css).
CHART_COLOURS = 8


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
    colour: int


@dataclass(frozen=True)
class ChartBar:
    label: str
    segments: list[ChartSegment]


@dataclass(frozen=True)
class StorageSummary:
    """Totals of every medium and two stacked bars against the scale (usually the quota)."""

    used_bytes: int
    file_count: int
    capacity_bytes: int
    quota_bytes: int
    scale_bytes: int
    used: list[ChartSegment]
    allocated: list[ChartSegment]

    @property
    def quota_x(self) -> float:
        """Where the quota falls on the bars (at their end unless something exceeds it)."""
        return 100.0 * self.quota_bytes / self.scale_bytes

    @property
    def bars(self) -> list[ChartBar]:
        return [ChartBar("Used", self.used), ChartBar("Allocated capacity", self.allocated)]

    @property
    def used_percent_of_quota(self) -> float:
        return 100.0 * self.used_bytes / self.quota_bytes if self.quota_bytes else 0.0

    @property
    def allocated_percent_of_quota(self) -> float:
        return 100.0 * self.capacity_bytes / self.quota_bytes if self.quota_bytes else 0.0


def _stack(values: list[tuple[str, int, int]], scale: int) -> list[ChartSegment]:
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
    scale = max(quota_bytes, capacity, used, 1)
    return StorageSummary(
        used_bytes=used,
        file_count=sum(m.file_count for m in media),
        capacity_bytes=capacity,
        quota_bytes=quota_bytes,
        scale_bytes=scale,
        used=_stack([(m.name, m.used_bytes, colours[m.pk]) for m in media], scale),
        allocated=_stack([(m.name, m.capacity_bytes, colours[m.pk]) for m in active], scale),
    )
