"""One size convention everywhere: binary units named KiB, MiB, GiB, TiB (forms ask GiB)."""

from pathlib import Path

import pytest

from portal.units import size_text

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0\xa0bytes"),
        (1, "1\xa0byte"),
        (1023, "1023\xa0bytes"),
        (1024, "1.0\xa0KiB"),
        (1536, "1.5\xa0KiB"),
        (10 * 1024**3, "10.0\xa0GiB"),
        (2 * 1024**4, "2.0\xa0TiB"),
        (-2048, "-2.0\xa0KiB"),
        (None, "0\xa0bytes"),
        ("not a number", "0\xa0bytes"),
    ],
)
def test_sizes_are_binary_with_iec_names(value, text):
    assert size_text(value) == text


def test_no_page_or_message_uses_djangos_decimal_named_sizes():
    """`filesizeformat` says "GB" for 1024³ bytes; everything goes through portal/units.py."""
    users = [
        str(path.relative_to(ROOT))
        for pattern in ("templates/**/*.html", "*/**/*.py")
        for path in ROOT.glob(pattern)
        if ".venv" not in path.parts
        and "tests" not in path.parts
        and "filesizeformat" in path.read_text(errors="ignore")
    ]
    assert users == []
