"""Reads on the study index: search, one study and its series, ingest activity, counts."""

import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from django.contrib.postgres.aggregates import ArrayAgg
from django.db.models import Count, F, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from studies.models import Instance, Series, Study

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
