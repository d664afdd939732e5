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


def spreadsheet_safe(value: str) -> str:
    """Spreadsheets run cells that start with = + - @ as formulas; make them text."""
    return "'" + value if value[:1] in {"=", "+", "-", "@"} else value
