"""Reads on the tenant's archive: storage media and their usage, and the study index."""

import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from django.contrib.postgres.aggregates import ArrayAgg
from django.db.models import Count, F, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from studies.models import Instance, MediumStatus, Series, StorageMedium, Study

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


# -- studies ----------------------------------------------------------------------------------

# `?sort=` values and the columns they order by; anything else falls back to the default.
STUDY_SORTS = {
    "study_date": ("study_date", "study_time", "pk"),
    "patient_name": ("patient_name", "pk"),
    "received": ("received_at", "pk"),
}
DEFAULT_STUDY_SORT = "-study_date"
UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def wildcard_regex(pattern: str) -> str:
    """A DICOM name pattern (`*` any run, `?` one character) as an anchored regex.

    Everything else is escaped, so a name can never inject regex syntax. A pattern without
    wildcards matches names that start with it ("doe" finds "DOE^JOHN").
    """
    parts = [".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern]
    tail = "$" if "*" in pattern or "?" in pattern else ""
    return "^" + "".join(parts) + tail


def study_sort_columns(sort: str) -> list[Any]:
    key = sort.lstrip("-")
    if key not in STUDY_SORTS:
        sort, key = DEFAULT_STUDY_SORT, DEFAULT_STUDY_SORT.lstrip("-")
    descending = sort.startswith("-")
    columns: list[Any] = [("-" if descending else "") + column for column in STUDY_SORTS[key]]
    if key == "study_date":
        # Studies without a date go last whichever way the list is sorted.
        return [
            (F("study_date").desc if descending else F("study_date").asc)(nulls_last=True),
            *columns[1:],
        ]
    return columns


def study_search(
    *,
    patient_name: str = "",
    patient_id: str = "",
    accession_number: str = "",
    date_from: date | None = None,
    date_to: date | None = None,
    modality: str = "",
    description: str = "",
    sort: str = DEFAULT_STUDY_SORT,
) -> QuerySet[Study]:
    """Studies of the active tenant matching every given criterion (blank ones are ignored)."""
    studies = Study.objects.all()
    if patient_name:
        studies = studies.filter(patient_name__iregex=wildcard_regex(patient_name))
    if patient_id:
        studies = studies.filter(patient_id__iregex=wildcard_regex(patient_id))
    if accession_number:
        studies = studies.filter(accession_number__iexact=accession_number)
    if date_from:
        studies = studies.filter(study_date__gte=date_from)
    if date_to:
        studies = studies.filter(study_date__lte=date_to)
    if modality:
        studies = studies.filter(modalities__contains=[modality.upper()])
    if description:
        studies = studies.filter(description__icontains=description)
    return studies.order_by(*study_sort_columns(sort))


def study_get(*, study_instance_uid: str) -> Study | None:
    """The study with this UID in the active tenant, or None (also for malformed UIDs)."""
    if len(study_instance_uid) > 64 or not UID_PATTERN.match(study_instance_uid):
        return None
    return Study.objects.filter(study_instance_uid=study_instance_uid).first()


def study_series(*, study: Study) -> QuerySet[Series]:
    """The study's series with the names of the media that hold their files."""
    return (
        Series.objects.filter(study=study)
        .annotate(media=ArrayAgg("instances__medium__name", distinct=True, default=Value([])))
        .order_by("series_number", "received_at", "pk")
    )


def series_middle_instance(*, series: Series) -> Instance | None:
    """The instance a thumbnail shows: the middle one in instance-number order."""
    instances = Instance.objects.filter(series=series).select_related("medium")
    count = instances.count()
    if not count:
        return None
    return instances.order_by("instance_number", "sop_instance_uid")[count // 2]


@dataclass(frozen=True)
class IngestActivity:
    days: list[tuple[date, int, float]]  # day, studies received, bar height in percent
    peak: int

    @property
    def total(self) -> int:
        return sum(count for _day, count, _height in self.days)

    @property
    def bars(self) -> list[dict[str, Any]]:
        """SVG geometry: 20 units per day, bars up to 90 units tall standing on y = 90."""
        bars = []
        for index, (day, count, height) in enumerate(self.days):
            tall = round(0.9 * height, 1)
            bars.append(
                {"day": day, "count": count, "x": index * 20 + 2, "y": 90 - tall, "height": tall}
            )
        return bars


def ingest_activity(*, days: int = 14, today: date | None = None) -> IngestActivity:
    """Studies received per day over the last `days` days (today included), oldest first."""
    today = today or timezone.localdate()
    first = today - timedelta(days=days - 1)
    counts = dict(
        Study.objects.filter(received_at__date__gte=first)
        .annotate(day=TruncDate("received_at"))
        .values_list("day")
        .annotate(n=Count("pk"))
        .values_list("day", "n")
    )
    peak = max(counts.values(), default=0)
    series = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        count = counts.get(day, 0)
        series.append((day, count, 100.0 * count / peak if peak else 0.0))
    return IngestActivity(days=series, peak=peak)


def archive_counts() -> dict[str, int]:
    """Studies, series and instances of the active tenant, in one query."""
    return Study.objects.aggregate(
        studies=Count("pk"),
        series=Coalesce(Sum("num_series"), 0),
        instances=Coalesce(Sum("num_instances"), 0),
    )
