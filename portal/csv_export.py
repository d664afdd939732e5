"""Streaming CSV exports that spreadsheets open safely (audit log, usage for billing)."""

import csv
from collections.abc import Iterable, Iterator
from typing import Any


class _Echo:
    """A file-like object whose write returns the line, for streaming csv.writer output."""

    def write(self, value: str) -> str:
        return value


def csv_lines(header: list[str], rows: Iterable[Iterable[Any]]) -> Iterator[str]:
    """The header, then each row, one encoded CSV line at a time (never the whole file)."""
    writer = csv.writer(_Echo())
    yield writer.writerow(header)
    for row in rows:
        yield writer.writerow(row)


# Spreadsheets run a cell as a formula when it starts with = + - @; a leading TAB or CR is
# skipped by some of them on import, after which the formula character counts again.
FORMULA_STARTS = frozenset("=+-@\t\r")


def spreadsheet_safe(value: str) -> str:
    """A cell that no spreadsheet runs as a formula: risky ones get a leading apostrophe."""
    return "'" + value if value[:1] in FORMULA_STARTS else value
