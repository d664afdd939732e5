"""Pure DICOM parsing: a file becomes a frozen `ParsedInstance`, or one `DicomParseError`.

No ORM and no storage here, so every rule is tested without a database. The checks are the
ones that keep an archive safe: readable Part 10 file, the four UIDs present and well formed
(they become path parts later), a storable SOP class, sizes within bounds.
"""

import dataclasses
import re
import zlib
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import pydicom
import pydicom.filereader
import pydicom.filewriter
import pydicom.uid
from pydicom.dataset import Dataset
from pydicom.filebase import DicomFileLike
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from studies import scan

UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
MAX_UID_LENGTH = 64
# Real objects nest a handful of levels (structured reports a dozen); pydicom recurses per
# level, so deeper files are refused at the door instead of failing later in a viewer.
MAX_SEQUENCE_DEPTH = 32
DEFER_BYTES = 64 * 1024


class DicomParseError(ValueError):
    """Why a file cannot enter the archive; `code` is stable, the message is for people."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ParsedInstance:
    """What the index needs from one instance, read without its pixel data."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: date | None = None
    patient_sex: str = ""
    study_date: date | None = None
    study_time: time | None = None
    accession_number: str = ""
    study_id: str = ""
    study_description: str = ""
    referring_physician_name: str = ""
    modality: str = ""
    series_number: int | None = None
    series_description: str = ""
    body_part_examined: str = ""
    instance_number: int | None = None
    rows: int | None = None
    columns: int | None = None
    number_of_frames: int | None = None
    bits_allocated: int | None = None
    specific_character_set: str = ""

    @property
    def study_datetime(self) -> datetime | None:
        if self.study_date is None:
            return None
        return datetime.combine(self.study_date, self.study_time or time.min)


def is_valid_uid(value: str) -> bool:
    return 0 < len(value) <= MAX_UID_LENGTH and bool(UID_RE.fullmatch(value))


def is_storage_sop_class(uid: str) -> bool:
    try:
        return issubclass(uid_to_service_class(uid), StorageServiceClass)
    except Exception:  # unknown or malformed UIDs map to no service class at all
        return False


def _text(dataset: Dataset, keyword: str, limit: int = 64) -> str:
    value = dataset.get(keyword)
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue):
        value = "\\".join(str(v) for v in value)
    return str(value).strip().replace("\x00", "")[:limit]


def _int(dataset: Dataset, keyword: str) -> int | None:
    value = dataset.get(keyword)
    try:
        number = int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return number if number is None or -(2**31) <= number < 2**31 else None


def _date(dataset: Dataset, keyword: str) -> date | None:
    """DICOM DA (YYYYMMDD, no time zone); a malformed date stays out of the index."""
    raw = _text(dataset, keyword, 8)
    if len(raw) != 8 or not raw.isdigit():
        return None
    try:
        return date(int(raw[:4]), int(raw[4:6]), int(raw[6:]))
    except ValueError:
        return None


def _time(dataset: Dataset, keyword: str) -> time | None:
    """DICOM TM (HH[MM[SS[.frac]]], no time zone)."""
    raw = _text(dataset, keyword, 16).split(".", 1)[0].replace(":", "")
    if not raw.isdigit() or len(raw) not in (2, 4, 6):
        return None
    hour, minute, second = (int((raw + "0000")[i : i + 2]) for i in (0, 2, 4))
    try:
        return time(hour, minute, second)
    except ValueError:
        return None


def _uid(dataset: Dataset, keyword: str, *, meta: bool = False) -> str:
    value = str(dataset.get(keyword, "") or "").strip().rstrip("\x00")
    if not value:
        raise DicomParseError("missing-uid", f"{keyword} is missing.")
    if not is_valid_uid(value):
        shown = value[:80].encode("ascii", "backslashreplace").decode()
        raise DicomParseError("invalid-uid", f"{keyword} is not a valid UID: {shown!r}.")
    return value


MAX_FRAMES = 100_000
BITS_ALLOCATED = frozenset({1, 8, 16, 32, 64})
SAMPLES_PER_PIXEL = frozenset({1, 3, 4})


def decoded_frame_bytes(header: Any) -> int:
    """What one frame of `header`'s pixel data takes once decoded, from the header alone."""
    rows, columns = _int(header, "Rows") or 0, _int(header, "Columns") or 0
    samples, bits = _int(header, "SamplesPerPixel") or 1, _int(header, "BitsAllocated") or 8
    return max(rows, 0) * max(columns, 0) * max(samples, 1) * ((max(bits, 1) + 7) // 8)


def check_decodable(header: Any, *, limit: int) -> None:
    """Refuse to decode a frame that would take more than `limit` bytes: a compressed file
    of a few KiB may claim 65535 x 65535 pixels, and decoders allocate what it claims."""
    size = decoded_frame_bytes(header)
    if size > limit:
        raise DicomParseError(
            "too-large-to-decode",
            f"A frame would take {size} bytes decoded, more than the {limit} the archive "
            "decodes for pictures.",
        )


def check_pixels(dataset: Dataset, *, transfer_syntax_uid: str) -> None:
    """Refuse pixel data a viewer would choke on, from the header and the element's length
    alone (the pixels are never loaded): attributes out of range, native pixel data whose
    length is not Rows x Columns x SamplesPerPixel x BitsAllocated x NumberOfFrames (padded
    to even, PS3.5 8.1.1), encapsulated pixel data of defined length (PS3.5 A.4)."""
    if scan.PIXEL_DATA not in dataset:
        return
    raw = dataset.get_item(scan.PIXEL_DATA, keep_deferred=True)
    length = getattr(raw, "length", None)
    syntax = pydicom.uid.UID(transfer_syntax_uid)
    encapsulated = syntax.is_encapsulated if syntax.is_transfer_syntax else False
    if encapsulated:
        if length != scan.UNDEFINED:
            raise DicomParseError(
                "pixel-data", "Encapsulated pixel data must have an undefined length."
            )
        return
    if length == scan.UNDEFINED:
        raise DicomParseError(
            "pixel-data", "Native pixel data has an undefined length (only compressed may)."
        )
    rows, columns = _int(dataset, "Rows"), _int(dataset, "Columns")
    bits, samples = _int(dataset, "BitsAllocated"), _int(dataset, "SamplesPerPixel") or 1
    frames = _int(dataset, "NumberOfFrames") or 1
    if rows is None or columns is None or bits is None:
        raise DicomParseError(
            "pixel-data", "Pixel data without Rows, Columns or BitsAllocated cannot be shown."
        )
    if not (0 < rows <= 0xFFFF and 0 < columns <= 0xFFFF and 0 < frames <= MAX_FRAMES):
        raise DicomParseError(
            "pixel-data",
            f"The image is {rows} x {columns} pixels in {frames} frames; the archive takes "
            f"1 to 65535 pixels a side and at most {MAX_FRAMES} frames.",
        )
    if bits not in BITS_ALLOCATED or samples not in SAMPLES_PER_PIXEL:
        raise DicomParseError(
            "pixel-data",
            f"BitsAllocated {bits} and SamplesPerPixel {samples} are not an image's "
            "(bits 1, 8, 16, 32 or 64; samples 1, 3 or 4).",
        )
    expected = (rows * columns * samples * frames * bits + 7) // 8
    if length not in (expected, expected + expected % 2):
        raise DicomParseError(
            "pixel-data",
            f"The pixel data holds {length} bytes; {rows} x {columns} x {samples} samples x "
            f"{bits} bits x {frames} frames need {expected}.",
        )


def parse_dataset(dataset: Dataset, *, transfer_syntax_uid: str) -> ParsedInstance:
    """Validate and extract the index fields of an already-read dataset whose structure
    `studies.scan` has checked."""
    try:
        sop_class = _uid(dataset, "SOPClassUID")
        if not is_storage_sop_class(sop_class):
            raise DicomParseError(
                "not-storable", f"SOP class {sop_class} is not a storage SOP class."
            )
        check_pixels(dataset, transfer_syntax_uid=transfer_syntax_uid)
        return ParsedInstance(
            sop_class_uid=sop_class,
            sop_instance_uid=_uid(dataset, "SOPInstanceUID"),
            study_instance_uid=_uid(dataset, "StudyInstanceUID"),
            series_instance_uid=_uid(dataset, "SeriesInstanceUID"),
            transfer_syntax_uid=transfer_syntax_uid,
            patient_id=_text(dataset, "PatientID"),
            issuer_of_patient_id=_text(dataset, "IssuerOfPatientID"),
            patient_name=_text(dataset, "PatientName", 324),
            patient_birth_date=_date(dataset, "PatientBirthDate"),
            patient_sex=_text(dataset, "PatientSex", 16),
            study_date=_date(dataset, "StudyDate"),
            study_time=_time(dataset, "StudyTime"),
            accession_number=_text(dataset, "AccessionNumber"),
            study_id=_text(dataset, "StudyID", 16),
            study_description=_text(dataset, "StudyDescription"),
            referring_physician_name=_text(dataset, "ReferringPhysicianName", 324),
            modality=_text(dataset, "Modality", 16).upper(),
            series_number=_int(dataset, "SeriesNumber"),
            series_description=_text(dataset, "SeriesDescription"),
            body_part_examined=_text(dataset, "BodyPartExamined", 16),
            instance_number=_int(dataset, "InstanceNumber"),
            rows=_int(dataset, "Rows"),
            columns=_int(dataset, "Columns"),
            number_of_frames=_int(dataset, "NumberOfFrames"),
            bits_allocated=_int(dataset, "BitsAllocated"),
            specific_character_set=_text(dataset, "SpecificCharacterSet"),
        )
    except RecursionError:
        raise DicomParseError("too-deep", "Sequences are nested too deeply.") from None
    except DicomParseError:
        raise
    except Exception as error:  # pydicom raises many kinds while decoding values lazily
        raise DicomParseError("unreadable", f"An attribute cannot be decoded: {error}.") from None


DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian
INFLATE_CHUNK = 1 << 20


META_LIMIT = 64 * 1024
IMPLICIT_LITTLE = "1.2.840.10008.1.2"
EXPLICIT_BIG = "1.2.840.10008.1.2.2"


def read_meta(path: Path) -> tuple[int, str]:
    """Where the data set starts and the file meta's transfer syntax UID, from the bytes.

    The meta is group 0002 in explicit VR little endian after the preamble and "DICM"
    (PS3.10 7.1); it is walked element by element (its group length is not trusted), which
    costs a tenth of pydicom's meta reader (profiled, 0.25 of 2.5 ms a parse)."""
    with path.open("rb") as stream:
        head = stream.read(META_LIMIT)
    if len(head) < 132 or head[128:132] != b"DICM":
        raise DicomParseError(
            "not-dicom", "Not a DICOM file (no 'DICM' marker after the 128-byte preamble)."
        )
    at, syntax = 132, ""
    while at + 8 <= len(head) and head[at : at + 2] == b"\x02\x00":
        vr = head[at + 4 : at + 6]
        if vr in scan.LONG_VRS:
            length, value = int.from_bytes(head[at + 8 : at + 12], "little"), at + 12
        elif vr in scan.SHORT_VRS:
            length, value = int.from_bytes(head[at + 6 : at + 8], "little"), at + 8
        else:
            raise DicomParseError("unreadable", f"The file meta is not explicit VR (offset {at}).")
        if value + length > len(head):
            raise DicomParseError(
                "unreadable", f"The file meta is cut off or longer than {META_LIMIT} bytes."
            )
        if head[at + 2 : at + 4] == b"\x10\x00":
            syntax = head[value : value + length].rstrip(b"\x00 ").decode("ascii", "replace")
        at = value + length
    if not syntax:
        raise DicomParseError("no-transfer-syntax", "The file meta has no transfer syntax UID.")
    return at, syntax


def inflate_to(source: Path, target: Path, *, limit: int) -> int:
    """Write `source` (a Deflated Explicit VR Little Endian Part 10 file) to `target` as
    Explicit VR Little Endian, inflating at most `limit` bytes, a chunk at a time.

    pydicom inflates a deflated data set whole, without a limit: a 255 KiB file costs 512
    MiB. Here memory stays at one chunk whatever the file says, and a data set that inflates
    past `limit` is refused before it is all read. Returns the inflated data set's size."""
    meta = pydicom.filereader.read_file_meta_info(source)
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    start, _ = read_meta(source)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate (PS3.5 A.5)
    inflated = 0
    with source.open("rb") as incoming, target.open("wb") as out:
        out.write(b"\x00" * 128 + b"DICM")
        pydicom.filewriter.write_file_meta_info(DicomFileLike(out), meta, enforce_standard=False)
        incoming.seek(start)
        pending = b""
        while True:
            if not pending:
                pending = incoming.read(INFLATE_CHUNK)
                if not pending:
                    break
            try:
                chunk = inflater.decompress(pending, INFLATE_CHUNK)
            except zlib.error as error:
                raise DicomParseError(
                    "unreadable", f"The deflated data set is corrupt: {error}."
                ) from None
            pending = inflater.unconsumed_tail
            inflated += len(chunk)
            if inflated > limit:
                raise DicomParseError(
                    "inflates-too-large",
                    f"The deflated data set inflates to more than {limit} bytes "
                    f"(the file is {source.stat().st_size}); it was not stored.",
                )
            out.write(chunk)
            if inflater.eof:
                break
    if not inflater.eof:
        raise DicomParseError("truncated", "The deflated data set ends before its stream does.")
    return inflated


def _parse_deflated(path: Path, *, max_bytes: int) -> ParsedInstance:
    """Parse a deflated file through a bounded inflated copy beside it (removed after):
    completeness and nesting are checked on what was inflated, the file stays as sent."""
    inflated = path.with_name(f".{path.name}.inflated")
    try:
        inflate_to(path, inflated, limit=max_bytes)
        parsed = parse_file(inflated, max_bytes=max_bytes + (1 << 20))
    finally:
        inflated.unlink(missing_ok=True)
    return dataclasses.replace(parsed, transfer_syntax_uid=DEFLATED)


def parse_file(path: Path | str, *, max_bytes: int) -> ParsedInstance:
    """Read a Part 10 file's header (never its pixels) and validate it: its structure from
    the bytes first (`studies.scan`), then the index fields through pydicom."""
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise DicomParseError("too-large", f"The file is {size} bytes; the limit is {max_bytes}.")
    if size < 132:
        raise DicomParseError("not-dicom", "The file is too short to be DICOM.")
    start, transfer_syntax = read_meta(path)
    if transfer_syntax == DEFLATED:
        return _parse_deflated(path, max_bytes=max_bytes)
    if not is_valid_uid(transfer_syntax):
        raise DicomParseError("invalid-uid", "The transfer syntax UID is not valid.")
    try:
        scan.scan(
            path,
            start=start,
            implicit=transfer_syntax == IMPLICIT_LITTLE,
            little=transfer_syntax != EXPLICIT_BIG,
            max_depth=MAX_SEQUENCE_DEPTH,
        )
    except scan.StructureError as error:
        raise DicomParseError(error.code, error.message) from None
    try:
        # Large values (pixels) are deferred: their lengths are checked, never loaded.
        dataset = pydicom.dcmread(path, defer_size=DEFER_BYTES)
    except RecursionError:
        raise DicomParseError("too-deep", "Sequences are nested too deeply.") from None
    except Exception as error:
        raise DicomParseError("unreadable", f"The file cannot be read as DICOM: {error}.") from None
    return parse_dataset(dataset, transfer_syntax_uid=transfer_syntax)
