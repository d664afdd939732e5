"""The index query layer QIDO-RS and C-FIND share: names, matching rules, and the
conformance statement kept true to the attributes the index really holds."""

from pathlib import Path

import pytest
from django.db.models import Q

from studies.index.query import (
    ATTRIBUTES,
    BY_KEYWORD,
    Level,
    QueryError,
    attribute_named,
    match_condition,
)

CONFORMANCE = Path(__file__).resolve().parents[3] / "docs" / "conformance.md"


def test_the_conformance_statement_lists_every_index_attribute():
    text = CONFORMANCE.read_text()
    for attribute in ATTRIBUTES:
        tag = f"({attribute.tag_hex[:4]},{attribute.tag_hex[4:]})"
        row = f"| {attribute.keyword} | {tag} | {attribute.vr} | {attribute.level.name.lower()} |"
        assert row in text, f"docs/conformance.md lacks the row of {attribute.keyword}"


def test_attributes_are_named_by_keyword_or_tag():
    assert attribute_named("PatientName") is BY_KEYWORD["PatientName"]
    assert attribute_named("00100010") is BY_KEYWORD["PatientName"]
    assert attribute_named("0010001c") is None  # a DICOM tag the index does not hold
    with pytest.raises(QueryError):
        attribute_named("PatientNam")


@pytest.mark.parametrize(
    ("keyword", "value", "expected"),
    [
        ("PatientName", "DOE*", Q(patient_name__upper_like="DOE%")),
        ("PatientName", "D?E", Q(patient_name__upper_like="D_E")),
        ("PatientName", "100%_*", Q(patient_name__upper_like="100\\%\\_%")),
        ("PatientName", "DOE^JOHN", Q(patient_name__iexact="DOE^JOHN")),
        ("PatientName", "*", Q()),
        ("PatientID", "A*", Q(patient_id__like="A%")),
        ("AccessionNumber", "ACC1", Q(accession_number="ACC1")),
        ("StudyInstanceUID", "1.2,1.3", Q(study_instance_uid__in=["1.2", "1.3"])),
        ("StudyInstanceUID", "1.2\\1.3", Q(study_instance_uid__in=["1.2", "1.3"])),
        ("ModalitiesInStudy", "CT\\mr", Q(modalities__overlap=["CT", "MR"])),
    ],
)
def test_values_become_the_conditions_ps3_4_describes(keyword, value, expected):
    assert match_condition(BY_KEYWORD[keyword], value, Level.STUDY) == expected


def test_higher_level_attributes_are_seen_through_their_relations():
    condition = match_condition(BY_KEYWORD["AccessionNumber"], "X", Level.INSTANCE)
    assert condition == Q(series__study__accession_number="X")


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("StudyDate", "2024"),
        ("StudyDate", "20240230"),
        ("StudyTime", "25"),
        ("StudyInstanceUID", "01.2"),
        ("SeriesNumber", "one"),
        ("NumberOfStudyRelatedSeries", "2"),
    ],
)
def test_malformed_values_are_refused(keyword, value):
    with pytest.raises(QueryError):
        match_condition(BY_KEYWORD[keyword], value, Level.SERIES)


def test_a_uid_with_a_trailing_newline_is_not_a_uid():
    from studies.dicom import is_valid_uid

    assert is_valid_uid("1.2.3") and not is_valid_uid("1.2.3\n")
