"""The DICOM header of one stored instance, as rows for people: tag, name, VR, value.

Read without the pixels, and bounded: large values stay on disk (shown by their length),
text is cut, sequences are followed to a depth and an item count, and the whole listing stops
at a row limit, so a hostile or huge header cannot make a page of any size.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

VALUE_BYTES = 4096  # larger values are not read
VALUE_CHARS = 160
MAX_DEPTH = 4
MAX_ITEMS = 20  # per sequence
MAX_ROWS = 2000


@dataclass(frozen=True)
class HeaderRow:
    depth: int
    tag: str
    name: str
    vr: str
    value: str


def header_rows(path: Path) -> tuple[list[HeaderRow], bool]:
    """The rows of the file's header (file meta first), and whether the listing was cut."""
    ds = pydicom.dcmread(str(path), stop_before_pixels=True, defer_size=VALUE_BYTES)
    rows: list[HeaderRow] = []
    sources = [ds.file_meta, ds] if getattr(ds, "file_meta", None) else [ds]
    for source in sources:
        for row in _rows(source, 0):
            if len(rows) >= MAX_ROWS:
                return rows, True
            rows.append(row)
    return rows, False


def _rows(ds: Dataset, depth: int) -> Iterator[HeaderRow]:
    # The stored elements as read, not `ds.elements()`: that converts private elements of a
    # known creator, which reads their deferred values whatever their size.
    for _tag, raw in sorted(ds._dict.items()):
        tag, vr = raw.tag, raw.VR or ""
        name = keyword_for_tag(tag) or ("Private" if tag.is_private else "Unknown")
        label = f"({tag.group:04X},{tag.element:04X})"
        if isinstance(raw, RawDataElement) and raw.value is None and raw.length:
            yield HeaderRow(depth, label, name, vr, f"({raw.length:,} bytes, not shown)")
            continue
        element = ds[tag]
        if element.VR == "SQ":
            items = element.value or []
            yield HeaderRow(depth, label, name, "SQ", f"{len(items)} item{'s' * (len(items) != 1)}")
            if depth + 1 >= MAX_DEPTH:
                continue
            for number, item in enumerate(items[:MAX_ITEMS], start=1):
                yield HeaderRow(depth + 1, "", f"Item {number}", "", "")
                yield from _rows(item, depth + 2)
            if len(items) > MAX_ITEMS:
                yield HeaderRow(depth + 1, "", f"… {len(items) - MAX_ITEMS} more items", "", "")
            continue
        yield HeaderRow(depth, label, name, element.VR, _text(element.value, element.VR))


def _text(value: object, vr: str) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, bytes):
        return (
            f"({len(value):,} bytes)"
            if vr in {"OB", "OW", "OF", "OD", "OL", "OV", "UN"} or (len(value) > VALUE_CHARS)
            else value.hex(" ")
        )
    text = str(value)
    return text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…"
