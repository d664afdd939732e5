"""The hostile corpus through the parser: each malformed kind refused with its own reason,
each hostile-but-valid kind taken. The channels run the same corpus end to end
(tests/studies/uploads/test_ingest_api.py, tests/dicomweb/test_stow.py,
tests/dicomnet/test_gateway.py)."""

import tracemalloc
from collections import Counter

import pytest

from studies.dicom import DicomParseError, parse_file
from studies.ingest import Refusal
from tests.studies.hostile import STORED, corpus

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns on bad values


def outcome(path) -> tuple[str, str]:
    try:
        parse_file(path, max_bytes=1 << 30)
    except DicomParseError as refused:
        return refused.code, refused.message
    return STORED, ""


def test_the_corpus_covers_fifty_kinds_in_every_category(tmp_path):
    specimens = corpus(tmp_path)
    assert len({s.kind for s in specimens}) == len(specimens) >= 70
    categories = Counter(s.category for s in specimens)
    assert set(categories) == {
        "structure",
        "file",
        "identity",
        "encoding",
        "pixels",
        "compression",
        "text",
        "valid",
    }
    refused = [s for s in specimens if s.expected != STORED]
    assert len(refused) >= 50
    # Every expected code is one the channels know how to answer.
    assert {s.expected for s in refused} <= set(Refusal)


def test_every_malformed_kind_is_refused_with_its_reason_and_every_valid_one_taken(tmp_path):
    wrong = {}
    for specimen in corpus(tmp_path):
        code, message = outcome(specimen.path)
        if code != specimen.expected or (code != STORED and len(message) < 20):
            wrong[specimen.kind] = (specimen.expected or "stored", code or "stored", message)
    assert wrong == {}


def test_no_specimen_costs_memory_beyond_its_size(tmp_path):
    specimens = corpus(tmp_path)
    tracemalloc.start()
    try:
        for specimen in specimens:
            tracemalloc.reset_peak()
            outcome(specimen.path)
            _, peak = tracemalloc.get_traced_memory()
            assert peak < 4 << 20, specimen.kind  # one specimen is 4 MB: refused unread
    finally:
        tracemalloc.stop()
