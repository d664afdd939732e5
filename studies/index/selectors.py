"""Reads on the study index: search, one study and its series, ingest activity, counts."""

import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from django.contrib.postgres.aggregates import ArrayAgg
from django.db.models import Count, F, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from studies.index.query import BY_KEYWORD, Level, match_condition
from studies.models import Instance, Series, Study

# `?sort=` values and the columns they order by; anything else falls back to the default.
STUDY_SORTS = {
    "study_date": ("study_date", "study_time", "pk"),
    "patient_name": ("patient_name", "pk"),
    "received": ("received_at", "pk"),
}
DEFAULT_STUDY_SORT = "-study_date"
UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def page_pattern(text: str) -> str:
    """What the search box means in DICOM terms: as typed when it has `*` or `?`, otherwise
    the values that start with it ("doe" is "doe*")."""
    return text if "*" in text or "?" in text else f"{text}*"


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
    """Studies of the active tenant matching every given criterion (blank ones are ignored).

    Matched by the QIDO-RS and C-FIND rules of studies/index/query.py, on the same indexed
    columns: the page finds exactly the studies a DICOMweb client asking the same would.
    QueryError if a value cannot be matched (the form shows it)."""
    keys = [
        ("PatientName", page_pattern(patient_name) if patient_name else ""),
        ("PatientID", page_pattern(patient_id) if patient_id else ""),
        ("AccessionNumber", accession_number),
        ("ModalitiesInStudy", modality),
        ("StudyDescription", f"*{description}*" if description else ""),
    ]
    if date_from or date_to:
        span = f"{date_from:%Y%m%d}" if date_from else ""
        span += "-" + (f"{date_to:%Y%m%d}" if date_to else "")
        keys.append(("StudyDate", span))
    condition = Q()
    for keyword, value in keys:
        if value:
            condition &= match_condition(BY_KEYWORD[keyword], value, Level.STUDY)
    studies = Study.objects.filter(condition)
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
