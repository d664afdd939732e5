"""The structure of a data set, checked from its bytes before pydicom decodes any of it.

pydicom reads what it is given and keeps the last of two elements with the same tag, an item
longer than its sequence, a sequence whose "items" are not items, and an explicit-VR data
set that is really implicit (it guesses). A viewer then shows the wrong value or fails, so
the archive refuses such a file, with the element and the offset that are wrong.

One pass over the element headers, never over the values: pixel data and other long values
are skipped by their lengths, so a 1 GB file costs what its header costs (the file is mapped,
not read). What is checked (PS3.5 7.1 to 7.5, A.4):

- tags strictly ascending in every data set: a duplicate or out-of-order tag is refused;
- every value inside what contains it: the file, its item, its sequence;
- a defined-length sequence made of items exactly, an undefined-length one ended by its
  delimiter, the same for items; item tags only where items belong;
- explicit VR letters that are a VR; undefined lengths only on SQ, UN and pixel data;
- encapsulated pixel data: a Basic Offset Table item, then at least one fragment, then the
  delimiter, the table's offsets pointing at fragments in order;
- sequences nested at most `max_depth` deep (pydicom recurses per level).
"""

import mmap
import struct
from functools import lru_cache
from pathlib import Path

from pydicom.datadict import dictionary_VR

UNDEFINED = 0xFFFFFFFF
ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQUENCE_END = 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
MAX_OFFSETS = 100_000  # a Basic Offset Table has one per frame (studies.dicom.MAX_FRAMES)

# Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 Table 7.1-1).
LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
SHORT_VRS = frozenset(b"AE AS AT CS DA DS DT FD FL IS LO LT PN SH SL SS ST TM UI UL US".split())


class StructureError(ValueError):
    """A data set whose bytes break PS3.5; `code` is a `studies.dicom` refusal code."""

    def __init__(self, code: str, message: str):
        if code == "truncated":
            message = f"The file is truncated: {message[0].lower()}{message[1:]}"
        super().__init__(message)
        self.code = code
        self.message = message


@lru_cache(maxsize=4096)
def _is_sequence(tag: int) -> bool:
    """Whether the dictionary says `tag` is a sequence (implicit VR carries no VR)."""
    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:  # private and unknown tags of defined length stay opaque bytes
        return False


def _tag(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


class _Scanner:
    def __init__(self, buffer: bytes | mmap.mmap, *, little: bool, max_depth: int):
        self.buffer = buffer
        self.max_depth = max_depth
        order = "<" if little else ">"
        self.tag_length = struct.Struct(order + "HHL")
        self.half = struct.Struct(order + "H")
        self.word = struct.Struct(order + "L")
        self.offset = struct.Struct("<L")  # the offset table is little endian (PS3.5 A.4)

    def _header(self, at: int, end: int, where: str) -> tuple[int, int]:
        if at + 8 > end:
            raise StructureError("truncated", f"{where} ends at offset {at}, inside a header.")
        group, element, length = self.tag_length.unpack_from(self.buffer, at)
        return group << 16 | element, length

    def dataset(self, at: int, end: int, depth: int, *, implicit: bool, delimited: bool) -> int:
        """Check the elements from `at`; returns where the data set ends (after its item
        delimiter when `delimited`, else at `end`, which nothing may pass)."""
        buffer, last = self.buffer, -1
        while at < end:
            tag, length = self._header(at, end, "The data set")
            if tag == ITEM_END:
                if not delimited:
                    raise StructureError(
                        "malformed", f"An item delimiter at offset {at} ends no item."
                    )
                return at + 8
            if tag >> 16 == 0xFFFE:
                raise StructureError(
                    "malformed", f"Item tag {_tag(tag)} at offset {at} stands among elements."
                )
            if tag <= last:
                code = "duplicate-tag" if tag == last else "tag-order"
                said = "appears twice" if tag == last else f"comes after {_tag(last)}"
                raise StructureError(code, f"Element {_tag(tag)} {said} (offset {at}).")
            last = tag
            vr = b""
            if implicit:
                value = at + 8
            else:
                vr = bytes(buffer[at + 4 : at + 6])
                if vr in LONG_VRS:
                    if at + 12 > end:
                        raise StructureError(
                            "truncated", f"Element {_tag(tag)} at offset {at} is cut off."
                        )
                    length, value = self.word.unpack_from(buffer, at + 8)[0], at + 12
                elif vr in SHORT_VRS:
                    length, value = self.half.unpack_from(buffer, at + 6)[0], at + 8
                else:
                    shown = vr.decode("ascii", "backslashreplace")
                    raise StructureError(
                        "wrong-encoding",
                        f"Element {_tag(tag)} at offset {at} has no VR ({shown!r}): the "
                        "data set is not in the explicit VR its transfer syntax says.",
                    )
            if length == UNDEFINED:
                if tag == PIXEL_DATA:  # icons in sequences may be encapsulated too
                    at = self.fragments(value, end)
                elif implicit or vr in (b"SQ", b"UN"):
                    # Implicit VR: undefined length means a sequence. UN of undefined length
                    # is an implicit VR little endian sequence (PS3.5 6.2.2).
                    inner = implicit or vr == b"UN"
                    at = self.sequence(value, end, depth + 1, implicit=inner, delimited=True)
                else:
                    raise StructureError(
                        "malformed",
                        f"Element {_tag(tag)} ({vr.decode()}) has an undefined length; only "
                        "sequences and pixel data may.",
                    )
                continue
            if value + length > end:
                code = "truncated" if depth == 0 else "malformed"
                raise StructureError(
                    code,
                    f"Element {_tag(tag)} needs {length} bytes at offset {value}, past the "
                    f"end of its {'file' if depth == 0 else 'item'} at {end}.",
                )
            if vr == b"SQ" or (implicit and _is_sequence(tag)):
                self.sequence(value, value + length, depth + 1, implicit=implicit, delimited=False)
            at = value + length
        if delimited:
            raise StructureError("truncated", f"An item ends at offset {end} before its delimiter.")
        return at

    def sequence(self, at: int, end: int, depth: int, *, implicit: bool, delimited: bool) -> int:
        if depth > self.max_depth:
            raise StructureError(
                "too-deep", f"Sequences are nested more than {self.max_depth} levels deep."
            )
        while at < end:
            tag, length = self._header(at, end, "A sequence")
            if tag == SEQUENCE_END:
                if not delimited:
                    raise StructureError(
                        "malformed", f"A sequence delimiter at offset {at} ends no sequence."
                    )
                return at + 8
            if tag != ITEM:
                raise StructureError(
                    "malformed", f"A sequence holds {_tag(tag)} at offset {at}, not an item."
                )
            if length == UNDEFINED:
                at = self.dataset(at + 8, end, depth, implicit=implicit, delimited=True)
                continue
            if at + 8 + length > end:
                raise StructureError(
                    "malformed",
                    f"An item at offset {at} claims {length} bytes, more than its sequence holds.",
                )
            self.dataset(at + 8, at + 8 + length, depth, implicit=implicit, delimited=False)
            at += 8 + length
        if delimited:
            raise StructureError(
                "truncated", f"A sequence ends at offset {end} before its delimiter."
            )
        return at

    def fragments(self, at: int, end: int) -> int:
        """Encapsulated pixel data: offset table item, fragments, delimiter (PS3.5 A.4).

        Memory stays bounded whatever the file holds: the table has at most one offset per
        frame the archive takes, and fragments are matched against it as they are passed,
        never collected."""
        table: tuple[int, ...] | None = None
        found = fragments = first = 0  # table offsets matched so far, fragments passed
        while True:
            tag, length = self._header(at, end, "The encapsulated pixel data")
            if tag == SEQUENCE_END:
                break
            if tag != ITEM or length == UNDEFINED or at + 8 + length > end:
                raise StructureError(
                    "pixel-data",
                    f"The encapsulated pixel data holds a broken item at offset {at}.",
                )
            if table is None:
                if length % 4 or length // 4 > MAX_OFFSETS:
                    raise StructureError(
                        "pixel-data",
                        f"The pixel data's offset table is not made of at most {MAX_OFFSETS} "
                        "4-byte offsets.",
                    )
                count = length // 4
                table = struct.unpack_from(f"<{count}L", self.buffer, at + 8) if count else ()
                first = at + 8 + length
            else:
                # Offsets count from the first fragment's item and rise with each fragment:
                # in order, each table entry must be where some fragment starts.
                if found < len(table) and table[found] == at - first:
                    found += 1
                fragments += 1
            at += 8 + length
        if not fragments:
            raise StructureError("pixel-data", "The encapsulated pixel data holds no fragment.")
        if table and found != len(table):
            raise StructureError(
                "pixel-data",
                "The pixel data's offset table does not point at its fragments in order.",
            )
        return at + 8


def scan(path: Path, *, start: int, implicit: bool, little: bool, max_depth: int) -> None:
    """Check the structure of the data set that starts at `start` in `path` (after the
    file meta) and runs to the end of the file; raises `StructureError`."""
    with path.open("rb") as stream:
        size = path.stat().st_size
        if size <= start:
            return
        with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            scanner = _Scanner(mapped, little=little, max_depth=max_depth)
            scanner.dataset(start, size, 0, implicit=implicit, delimited=False)
