"""DICOM queries against the index: the attributes it holds, matching, and DICOM JSON answers.

QIDO-RS and C-FIND share this module: both name attributes by keyword or tag, both match
with the rules of PS3.4 C.2.2.2 (single value, `*`/`?` wildcards, UID lists, date and time
ranges, universal matching of an empty value), and both answer from index columns only,
never from the files. A query names a level (patient, study, series, instance); the
attributes of that level and the ones above it can be matched and returned.
"""

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, time
from enum import StrEnum
from functools import cached_property
from typing import Any

from django.db.models import Count, DateField, F, Func, OrderBy, Q, QuerySet, Sum
from django.db.models.functions import Coalesce
from pydicom.datadict import dictionary_VR, tag_for_keyword

from studies.dicom import is_valid_uid
from studies.models import Instance, Patient, Series, Study

MAX_UIDS_IN_LIST = 1000


class Level(StrEnum):
    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    INSTANCE = "IMAGE"  # the name C-FIND's QueryRetrieveLevel uses


LEVEL_ORDER = [Level.PATIENT, Level.STUDY, Level.SERIES, Level.INSTANCE]


class QueryError(ValueError):
    """A query that cannot be run as asked; the message says why, for the client."""


@dataclass(frozen=True)
class Attribute:
    """One index column as a DICOM attribute.

    `columns` maps the level a query runs at to the ORM path that holds this attribute from
    that level's model; a level missing from it cannot see the attribute.
    """

    keyword: str
    level: Level
    columns: Mapping[Level, str]
    matchable: bool = True

    @cached_property
    def tag(self) -> int:
        tag = tag_for_keyword(self.keyword)
        assert tag is not None, self.keyword
        return int(tag)

    @cached_property
    def vr(self) -> str:
        return str(dictionary_VR(self.tag))

    @cached_property
    def tag_hex(self) -> str:
        return f"{self.tag:08X}"


def _patient(column: str, patient_column: str) -> dict[Level, str]:
    """Patient attributes: on Patient rows, and copied onto each study."""
    return {
        Level.PATIENT: patient_column,
        Level.STUDY: column,
        Level.SERIES: f"study__{column}",
        Level.INSTANCE: f"series__study__{column}",
    }


def _study(column: str) -> dict[Level, str]:
    return {
        Level.STUDY: column,
        Level.SERIES: f"study__{column}",
        Level.INSTANCE: f"series__study__{column}",
    }


def _series(column: str) -> dict[Level, str]:
    return {Level.SERIES: column, Level.INSTANCE: f"series__{column}"}


def _instance(column: str) -> dict[Level, str]:
    return {Level.INSTANCE: column}


P, S, SE, I = Level.PATIENT, Level.STUDY, Level.SERIES, Level.INSTANCE  # noqa: E741
ATTRIBUTES: list[Attribute] = [
    Attribute("PatientName", P, _patient("patient_name", "name")),
    Attribute("PatientID", P, _patient("patient_id", "patient_id")),
    Attribute("PatientBirthDate", P, _patient("patient_birth_date", "birth_date")),
    Attribute("PatientSex", P, _patient("patient_sex", "sex")),
    Attribute("StudyInstanceUID", S, _study("study_instance_uid")),
    Attribute("StudyDate", S, _study("study_date")),
    Attribute("StudyTime", S, _study("study_time")),
    Attribute("AccessionNumber", S, _study("accession_number")),
    Attribute("StudyID", S, _study("study_id")),
    Attribute("StudyDescription", S, _study("description")),
    Attribute("ReferringPhysicianName", S, _study("referring_physician_name")),
    Attribute("ModalitiesInStudy", S, _study("modalities")),
    Attribute("NumberOfStudyRelatedSeries", S, _study("num_series"), matchable=False),
    Attribute("NumberOfStudyRelatedInstances", S, _study("num_instances"), matchable=False),
    Attribute("SeriesInstanceUID", SE, _series("series_instance_uid")),
    Attribute("Modality", SE, _series("modality")),
    Attribute("SeriesNumber", SE, _series("series_number")),
    Attribute("SeriesDescription", SE, _series("description")),
    Attribute("BodyPartExamined", SE, _series("body_part_examined")),
    Attribute("NumberOfSeriesRelatedInstances", SE, _series("num_instances"), matchable=False),
    Attribute("SOPInstanceUID", I, _instance("sop_instance_uid")),
    Attribute("SOPClassUID", I, _instance("sop_class_uid")),
    Attribute("InstanceNumber", I, _instance("instance_number")),
    Attribute("Rows", I, _instance("rows")),
    Attribute("Columns", I, _instance("columns")),
    Attribute("BitsAllocated", I, _instance("bits_allocated")),
    Attribute("NumberOfFrames", I, _instance("number_of_frames")),
    Attribute("AvailableTransferSyntaxUID", I, _instance("transfer_syntax_uid")),
]
BY_KEYWORD = {a.keyword: a for a in ATTRIBUTES}
BY_TAG = {a.tag: a for a in ATTRIBUTES}

# Counted, not stored: the patient level's own figures.
PATIENT_COUNTS = {
    "NumberOfPatientRelatedStudies": "n_studies",
    "NumberOfPatientRelatedSeries": "n_series",
    "NumberOfPatientRelatedInstances": "n_instances",
}

# What a QIDO-RS answer carries at each level unless `includefield` asks for more
# (PS3.18 Tables 10.6.3-3 to 10.6.3-5, as far as the index holds them).
DEFAULT_RETURN: dict[Level, list[str]] = {
    Level.PATIENT: ["PatientName", "PatientID", "PatientBirthDate", "PatientSex"],
    Level.STUDY: [
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "StudyDescription",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ],
    Level.SERIES: [
        "Modality",
        "SeriesDescription",
        "SeriesInstanceUID",
        "SeriesNumber",
        "NumberOfSeriesRelatedInstances",
    ],
    Level.INSTANCE: [
        "SOPClassUID",
        "SOPInstanceUID",
        "InstanceNumber",
        "Rows",
        "Columns",
        "BitsAllocated",
        "NumberOfFrames",
    ],
}

MODELS: dict[Level, Any] = {P: Patient, S: Study, SE: Series, I: Instance}
ORDERING: dict[Level, list[str]] = {
    P: ["name", "patient_id", "pk"],
    S: ["-study_date", "-study_time", "pk"],
    SE: ["series_number", "pk"],
    I: ["instance_number", "pk"],
}


def attribute_named(name: str) -> Attribute | None:
    """The index attribute a keyword (`PatientName`) or tag (`00100010`) names, if any.

    Raises QueryError for a name that is no DICOM attribute at all."""
    tag = parse_tag(name)
    if tag is None:
        raise QueryError(f"{name!r} is neither a DICOM keyword nor a tag (ggggeeee).")
    return BY_TAG.get(tag)


def parse_tag(name: str) -> int | None:
    """The tag of a keyword or of eight hex digits; None for neither."""
    if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
        return int(name, 16)
    found = tag_for_keyword(name)
    return int(found) if found is not None else None


# -- matching ---------------------------------------------------------------------------------


def _like(pattern: str) -> str:
    """A DICOM wildcard pattern as a LIKE pattern, with LIKE's own characters escaped."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _parse_date(text: str) -> date:
    if not re.fullmatch(r"\d{8}", text):
        raise QueryError(f"{text!r} is not a date (YYYYMMDD).")
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise QueryError(f"{text!r} is not a valid date.") from None


def _parse_time(text: str) -> time:
    raw = text.split(".", 1)[0].replace(":", "")
    if not re.fullmatch(r"\d{2}|\d{4}|\d{6}", raw):
        raise QueryError(f"{text!r} is not a time (HH[MM[SS]]).")
    hour, minute, second = (int((raw + "0000")[i : i + 2]) for i in (0, 2, 4))
    try:
        return time(hour, minute, second)
    except ValueError:
        raise QueryError(f"{text!r} is not a valid time.") from None


def _range(value: str, parse: Any, column: str) -> Q:
    if "-" not in value:
        return Q(**{column: parse(value)})
    low, _, high = value.partition("-")
    if not low and not high:
        raise QueryError("A range needs at least one end.")
    condition = Q()
    if low:
        condition &= Q(**{f"{column}__gte": parse(low)})
    if high:
        condition &= Q(**{f"{column}__lte": parse(high)})
    return condition


def _uid_list(value: str) -> list[str]:
    uids = [u.strip() for u in re.split(r"[\\,]", value) if u.strip()]
    if len(uids) > MAX_UIDS_IN_LIST:
        raise QueryError(f"At most {MAX_UIDS_IN_LIST} UIDs can be listed.")
    for uid in uids:
        if not is_valid_uid(uid):
            raise QueryError(f"{uid[:80]!r} is not a valid UID.")
    return uids


def _integer(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise QueryError(f"{value!r} is not an integer.") from None
    if not -(2**31) <= number < 2**31:
        raise QueryError(f"{value!r} is out of range.")
    return number


def match_condition(attribute: Attribute, value: str, level: Level) -> Q:
    """The condition `attribute` matches `value` with, seen from a query at `level`."""
    column = attribute.columns[level]
    vr = attribute.vr
    if not attribute.matchable:
        raise QueryError(f"{attribute.keyword} cannot be used as a matching key.")
    if "\x00" in value:
        raise QueryError("The value contains a NUL character.")
    if vr == "UI":
        uids = _uid_list(value)
        return Q(**{column: uids[0]}) if len(uids) == 1 else Q(**{f"{column}__in": uids})
    if vr == "DA":
        return _range(value, _parse_date, column)
    if vr == "TM":
        return _range(value, _parse_time, column)
    if vr in {"IS", "US", "SL", "UL", "SS"}:
        return Q(**{column: _integer(value)})
    if attribute.keyword == "ModalitiesInStudy":
        if set(value) == {"*"}:
            return Q()
        if "*" in value or "?" in value:
            raise QueryError("Only a lone * (any modality) is supported as a wildcard here.")
        modalities = [m.strip().upper() for m in re.split(r"[\\,]", value) if m.strip()]
        return Q(**{f"{column}__overlap": modalities})
    values = [v for v in value.split("\\") if v] or [value]
    condition = Q()
    for text in values:
        condition |= _text_condition(column, text, case_insensitive=vr == "PN")
    return condition


def _text_condition(column: str, text: str, *, case_insensitive: bool) -> Q:
    wild = "*" in text or "?" in text
    if not wild:
        return Q(**{f"{column}__iexact" if case_insensitive else column: text})
    if set(text) == {"*"}:
        return Q()
    return Q(**{f"{column}__{'upper_like' if case_insensitive else 'like'}": _like(text)})


# -- the query --------------------------------------------------------------------------------


@dataclass
class IndexQuery:
    """Matching keys and return keys at one level, optionally below one study or series."""

    level: Level
    matches: list[tuple[Attribute, str]] = field(default_factory=list)
    returns: list[Attribute | str] = field(default_factory=list)  # str: a patient count
    unsupported: list[str] = field(default_factory=list)
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None

    def add_match(self, name: str, value: str) -> None:
        """Match `name` against `value` (empty: universal matching, only returned)."""
        attribute = self._visible(name)
        if attribute is None:
            return
        if value:
            if not attribute.matchable:
                raise QueryError(f"{attribute.keyword} cannot be used as a matching key.")
            self.matches.append((attribute, value))
        self.add_return(attribute.keyword)

    def add_return(self, name: str) -> None:
        if self.level == Level.PATIENT and name in PATIENT_COUNTS:
            if name not in self.returns:
                self.returns.append(name)
            return
        attribute = self._visible(name)
        if attribute is not None and attribute not in self.returns:
            self.returns.append(attribute)

    def add_all_returns(self) -> None:
        for attribute in ATTRIBUTES:
            if self.level in attribute.columns:
                self.add_return(attribute.keyword)
        if self.level == Level.PATIENT:
            for name in PATIENT_COUNTS:
                self.add_return(name)

    def _visible(self, name: str) -> Attribute | None:
        if self.level == Level.PATIENT and name in PATIENT_COUNTS:
            return None
        attribute = attribute_named(name)
        if attribute is None or self.level not in attribute.columns:
            label = attribute.keyword if attribute else name
            if label not in self.unsupported:
                self.unsupported.append(label)
            return None
        return attribute

    def queryset(self) -> QuerySet[Any]:
        rows = MODELS[self.level].objects.all()
        if self.study_instance_uid is not None:
            study_uid = BY_KEYWORD["StudyInstanceUID"]
            rows = rows.filter(match_condition(study_uid, self.study_instance_uid, self.level))
        if self.series_instance_uid is not None:
            series_uid = BY_KEYWORD["SeriesInstanceUID"]
            rows = rows.filter(match_condition(series_uid, self.series_instance_uid, self.level))
        for attribute, value in self.matches:
            rows = rows.filter(match_condition(attribute, value, self.level))
        counts = [name for name in self.returns if isinstance(name, str)]
        if counts:
            # From the counters each study keeps: one join, and only when asked for.
            aggregates = {
                "n_studies": Count("studies"),
                "n_series": Coalesce(Sum("studies__num_series"), 0),
                "n_instances": Coalesce(Sum("studies__num_instances"), 0),
            }
            rows = rows.annotate(
                **{PATIENT_COUNTS[n]: aggregates[PATIENT_COUNTS[n]] for n in counts}
            )
        ordering: list[Any] = list(ORDERING[self.level])
        if self.level == Level.STUDY and any(a.keyword == "PatientName" for a, _ in self.matches):
            # Ordered by the bare date column, PostgreSQL walks the date index and filters
            # names row by row (22,000 rows for one surname at 100,000 studies); `date + 0`
            # leaves it the name index, and the few matches are sorted after (BENCHMARKS.md).
            ordering[0] = OrderBy(
                Func(F("study_date"), template="(%(expressions)s + 0)", output_field=DateField()),
                descending=True,
            )
        return rows.order_by(*ordering)

    def columns(self) -> list[str]:
        """The ORM paths to fetch: every returned attribute (UIDs always)."""
        paths = []
        for item in self.returns_with_keys():
            path = PATIENT_COUNTS[item] if isinstance(item, str) else item.columns[self.level]
            if path not in paths:
                paths.append(path)
        return paths

    def returns_with_keys(self) -> list[Attribute | str]:
        """Returned attributes, with the unique keys of this level and above always in."""
        keys = {
            Level.PATIENT: ["PatientID"],
            Level.STUDY: ["StudyInstanceUID"],
            Level.SERIES: ["StudyInstanceUID", "SeriesInstanceUID"],
            Level.INSTANCE: ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"],
        }[self.level]
        items: list[Attribute | str] = list(self.returns)
        for keyword in keys:
            if BY_KEYWORD[keyword] not in items:
                items.append(BY_KEYWORD[keyword])
        return items

    def rows(self, *, offset: int = 0, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Matching rows as {ORM path: value}, only the columns the answer needs."""
        rows = self.queryset().values(*self.columns())
        end = None if limit is None else offset + limit
        # A plain query, not `.iterator()`: Django would run that through a server-side
        # cursor, which PostgreSQL plans for its first rows only (a full scan by date).
        yield from rows[offset:end]


# -- values as DICOM --------------------------------------------------------------------------


def dicom_value(attribute: Attribute, raw: Any) -> list[Any]:
    """An index value as the list of DICOM values (empty: no value)."""
    if raw is None or raw == "" or raw == []:
        return []
    vr = attribute.vr
    if vr == "DA":
        return [raw.strftime("%Y%m%d")]
    if vr == "TM":
        return [raw.strftime("%H%M%S")]
    if isinstance(raw, list):
        return list(raw)
    if vr in {"IS", "US", "UL", "SL", "SS"}:
        return [int(raw)]
    return [raw]


def dicom_json(query: IndexQuery, row: Mapping[str, Any]) -> dict[str, Any]:
    """One result row in the DICOM JSON model (PS3.18 F.2)."""
    answer: dict[str, Any] = {}
    for item in query.returns_with_keys():
        if isinstance(item, str):
            tag = f"{tag_for_keyword(item):08X}"
            answer[tag] = {"vr": "IS", "Value": [int(row[PATIENT_COUNTS[item]])]}
            continue
        values = dicom_value(item, row[item.columns[query.level]])
        element: dict[str, Any] = {"vr": item.vr}
        if values:
            if item.vr == "PN":
                element["Value"] = [person_name(v) for v in values]
            else:
                element["Value"] = values
        answer[item.tag_hex] = element
    return dict(sorted(answer.items()))


PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def person_name(value: str) -> dict[str, str]:
    """A PN value in DICOM JSON: its `=`-separated component groups by name (PS3.18 F.2.2)."""
    groups = value.split("=")[: len(PN_GROUPS)]
    return {name: group for name, group in zip(PN_GROUPS, groups, strict=False) if group}


def returned_keywords(items: Iterable[Attribute | str]) -> list[str]:
    return [item if isinstance(item, str) else item.keyword for item in items]
