"""A corpus of hostile DICOM: malformed objects the archive must refuse, each with the reason
it must give, and hostile-but-valid objects it must store.

Every call makes new UIDs, so one test's specimens never collide with another's. Each
specimen is the whole Part 10 file; `dimse` says whether it can travel as a C-STORE (the
file meta does not: a receiver writes its own), so the same corpus runs through the
parser, REST, STOW-RS and the gateway.

The structural kinds are built from raw element bytes (pydicom would not write them); the
valid ones are written by pydicom or are its bundled real files.
"""

import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pydicom.filewriter
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
ITEM_END = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
SEQUENCE_END = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
UNDEFINED = 0xFFFFFFFF
STORED = ""  # the expected code of a specimen the archive must take


@dataclass(frozen=True)
class Specimen:
    kind: str
    category: str  # structure, file, identity, encoding, pixels, compression, text
    expected: str  # the refusal code, or STORED
    path: Path
    sop_instance_uid: str
    dimse: bool = True  # can be sent as a C-STORE data set


def element(tag: int, vr: str, value: bytes, *, length: int | None = None) -> bytes:
    """One explicit VR little endian element; `length` overrides the encoded length."""
    if len(value) % 2:
        value += b"\x00" if vr in ("UI", "OB", "UN") else b" "
    size = len(value) if length is None else length
    group, number = tag >> 16, tag & 0xFFFF
    if vr in LONG_VRS:
        return struct.pack("<HH2s2xL", group, number, vr.encode(), size) + value
    return struct.pack("<HH2sH", group, number, vr.encode(), size) + value


def implicit(tag: int, value: bytes, *, length: int | None = None) -> bytes:
    size = len(value) if length is None else length
    return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, size) + value


def item(body: bytes, *, length: int | None = None) -> bytes:
    return struct.pack("<HHL", 0xFFFE, 0xE000, len(body) if length is None else length) + body


def us(number: int) -> bytes:
    return struct.pack("<H", number)


class Builder:
    """Makes one corpus's files in `folder`, each with its own UIDs."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.specimens: list[Specimen] = []
        # The next raw specimen's SOP Instance UID: bodies built before `raw` is called
        # (as its arguments) encode it, `raw` takes it and draws the next.
        self.sop = generate_uid()

    # -- the parts ------------------------------------------------------------------------

    def elements(self, sop: str, **replace: bytes | None) -> dict[int, bytes]:
        """A valid 4 x 4 16-bit CT as raw elements by tag; `replace` by keyword (None drops)."""
        made = {
            0x00080016: element(0x00080016, "UI", CTImageStorage.encode()),
            0x00080018: element(0x00080018, "UI", sop.encode()),
            0x00080060: element(0x00080060, "CS", b"CT"),
            0x00100010: element(0x00100010, "PN", b"Hostile^Corpus"),
            0x00100020: element(0x00100020, "LO", b"HOSTILE-1"),
            0x0020000D: element(0x0020000D, "UI", generate_uid().encode()),
            0x0020000E: element(0x0020000E, "UI", generate_uid().encode()),
            0x00280002: element(0x00280002, "US", us(1)),
            0x00280010: element(0x00280010, "US", us(4)),
            0x00280011: element(0x00280011, "US", us(4)),
            0x00280100: element(0x00280100, "US", us(16)),
            0x00280101: element(0x00280101, "US", us(16)),
            0x7FE00010: element(0x7FE00010, "OW", bytes(32)),
        }
        keywords = {
            "SOPClassUID": 0x00080016,
            "SOPInstanceUID": 0x00080018,
            "StudyInstanceUID": 0x0020000D,
            "SeriesInstanceUID": 0x0020000E,
            "Rows": 0x00280010,
            "BitsAllocated": 0x00280100,
            "PixelData": 0x7FE00010,
        }
        for keyword, raw in replace.items():
            tag = keywords[keyword]
            if raw is None:
                del made[tag]
            else:
                made[tag] = raw
        return made

    def meta(self, sop: str, syntax: str = ExplicitVRLittleEndian) -> bytes:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = syntax
        meta.ImplementationClassUID = "1.2.826.0.1.3680043.10.1051.1"
        out = pydicom.filebase.DicomBytesIO()
        pydicom.filewriter.write_file_meta_info(out, meta, enforce_standard=True)
        return b"\x00" * 128 + b"DICM" + out.getvalue()

    def add(
        self,
        kind: str,
        category: str,
        expected: str,
        data: bytes,
        sop: str,
        *,
        dimse: bool = True,
    ) -> None:
        path = self.folder / f"{len(self.specimens):02d}-{kind}.dcm"
        path.write_bytes(data)
        self.specimens.append(Specimen(kind, category, expected, path, sop, dimse))

    def raw(
        self,
        kind: str,
        category: str,
        expected: str,
        *,
        body: bytes | None = None,
        syntax: str = ExplicitVRLittleEndian,
        dimse: bool = True,
        **replace: bytes | None,
    ) -> str:
        """A specimen from raw elements: the valid CT with `replace`, or `body` whole (the
        built with `self.sop`)."""
        sop, self.sop = self.sop, generate_uid()
        data = b"".join(self.elements(sop, **replace).values()) if body is None else body
        self.add(kind, category, expected, self.meta(sop, syntax) + data, sop, dimse=dimse)
        return sop

    def body(self, *inserted: bytes) -> bytes:
        """The valid CT's elements and `inserted` (raw elements), sorted by tag as a
        writer must."""
        parts = [*self.elements(self.sop).values(), *inserted]
        return b"".join(sorted(parts, key=lambda raw: struct.unpack_from("<HH", raw)))

    def written(
        self,
        kind: str,
        category: str,
        expected: str,
        dataset: Dataset,
        *,
        syntax: str = ExplicitVRLittleEndian,
    ) -> None:
        """A specimen pydicom writes from `dataset` (UIDs made here)."""
        sop = generate_uid()
        dataset.SOPInstanceUID = sop
        dataset.file_meta = FileMetaDataset()
        dataset.file_meta.TransferSyntaxUID = syntax
        dataset.file_meta.MediaStorageSOPClassUID = dataset.get("SOPClassUID", CTImageStorage)
        dataset.file_meta.MediaStorageSOPInstanceUID = sop
        path = self.folder / f"{len(self.specimens):02d}-{kind}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        self.specimens.append(Specimen(kind, category, expected, path, sop))

    def bundled(self, kind: str, name: str) -> None:
        """One of pydicom's real files, with new UIDs, in its own transfer syntax."""
        source = Path(get_testdata_file(name, download=False))
        ds = pydicom.dcmread(source)
        sop = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
        if 0xFFFCFFFC in ds:
            del ds[0xFFFCFFFC]
        path = self.folder / f"{len(self.specimens):02d}-{kind}.dcm"
        ds.save_as(path)
        self.specimens.append(Specimen(kind, "valid", STORED, path, sop))


def image(**attributes: object) -> Dataset:
    """A valid 4 x 4 16-bit CT dataset for pydicom to write."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID, ds.PatientName = "CT", "HOSTILE-2", "Hostile^Valid"
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = ds.BitsStored = 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = bytes(32)
    for key, value in attributes.items():
        setattr(ds, key, value)
    return ds


def _structure(b: Builder) -> None:
    pid = element(0x00100020, "LO", b"HOSTILE-1")
    b.raw("duplicate-tag", "structure", "duplicate-tag", body=b.body(pid))
    swapped = b.elements(b.sop)
    order = list(swapped)
    order[2], order[3] = order[3], order[2]  # PatientName before Modality
    b.raw("tag-out-of-order", "structure", "tag-order", body=b"".join(swapped[t] for t in order))
    b.raw(
        "element-past-end-of-file",
        "structure",
        "truncated",
        PixelData=element(0x7FE00010, "OW", bytes(32), length=4096),
    )
    whole = b"".join(b.elements(b.sop).values())
    b.raw("cut-inside-a-header", "structure", "truncated", body=whole + b"\xe0\x7f\x10")
    seq = 0x00189346  # CTDIPhantomTypeCodeSequence
    code = element(0x00080100, "SH", b"X")
    b.raw(
        "item-longer-than-its-sequence",
        "structure",
        "malformed",
        body=b.body(element(seq, "SQ", item(code, length=len(code) + 40) + code)),
    )
    b.raw(
        "sequence-holding-no-item",
        "structure",
        "malformed",
        body=b.body(element(seq, "SQ", code)),
    )
    b.raw(
        "undefined-sequence-without-delimiter",
        "structure",
        "truncated",
        body=b.body() + element(0x7FE10010, "SQ", item(code), length=UNDEFINED),
    )
    b.raw(
        "undefined-item-without-delimiter",
        "structure",
        "truncated",
        body=b.body() + element(0x7FE10010, "SQ", item(code, length=UNDEFINED), length=UNDEFINED),
    )
    b.raw("stray-item-delimiter", "structure", "malformed", body=b.body(ITEM_END))
    b.raw("stray-sequence-delimiter", "structure", "malformed", body=b.body(SEQUENCE_END))
    text = struct.pack("<HH2s2xL", 0x0018, 0x1030, b"UT", UNDEFINED) + b"text"
    b.raw("undefined-length-text", "structure", "malformed", body=b.body(text))
    b.raw(
        "item-delimiter-in-defined-item",
        "structure",
        "malformed",
        body=b.body(element(seq, "SQ", item(code + ITEM_END))),
    )
    b.raw(
        "sequence-delimiter-in-defined-sequence",
        "structure",
        "malformed",
        body=b.body(element(seq, "SQ", item(code) + SEQUENCE_END)),
    )
    b.raw(
        "duplicate-tag-inside-an-item",
        "structure",
        "duplicate-tag",
        body=b.body(element(seq, "SQ", item(code + code))),
    )
    inner = code
    for _ in range(40):
        inner = element(0x0040A730, "SQ", item(inner))
    b.raw("nested-40-deep", "structure", "too-deep", body=b.body(inner))


def _encoding(b: Builder) -> None:
    made = b.elements(b.sop)
    as_implicit = b"".join(
        implicit(tag, raw[12:] if raw[4:6].decode() in LONG_VRS else raw[8:])
        for tag, raw in made.items()
    )
    b.raw("implicit-body-declared-explicit", "encoding", "wrong-encoding", body=as_implicit)
    b.raw(
        "explicit-body-declared-implicit",
        "encoding",
        "truncated",
        body=b"".join(made.values()),
        syntax=ImplicitVRLittleEndian,
    )
    b.raw(
        "unknown-vr-letters",
        "encoding",
        "wrong-encoding",
        body=b.body(struct.pack("<HH2sH", 0x0018, 0x1030, b"ZZ", 2) + b"AB"),
    )
    b.raw(
        "transfer-syntax-not-a-uid",
        "encoding",
        "invalid-uid",
        syntax="1.2.840.10008.1.2.1a",
        dimse=False,
    )


def _file(b: Builder) -> None:
    sop = generate_uid()
    b.add("plain-text", "file", "not-dicom", b"<html>not an image</html>" * 20, sop, dimse=False)
    b.add("empty-file", "file", "not-dicom", b"", sop, dimse=False)
    b.add("no-dicm-marker", "file", "not-dicom", bytes(128) + b"DICN" + bytes(64), sop, dimse=False)
    meta = b.meta(sop)
    without = meta.replace(b"\x02\x00\x10\x00UI", b"\x02\x00\x12\x00UI", 1)  # TS renamed
    b.add("meta-cut-off", "file", "unreadable", meta[:170], sop, dimse=False)
    broken = meta[:136] + b"\x01\x02" + meta[138:]  # the group length's VR bytes not a VR
    elements = b"".join(b.elements(sop).values())
    for kind, code, head in (
        ("meta-without-transfer-syntax", "no-transfer-syntax", without),
        ("meta-not-explicit-vr", "unreadable", broken),
    ):
        b.add(kind, "file", code, head + elements, sop, dimse=False)


def _identity(b: Builder) -> None:
    b.raw("no-sop-instance-uid", "identity", "missing-uid", SOPInstanceUID=None)
    b.raw("no-study-instance-uid", "identity", "missing-uid", StudyInstanceUID=None)
    b.raw("no-series-instance-uid", "identity", "missing-uid", SeriesInstanceUID=None)
    b.raw("no-sop-class-uid", "identity", "missing-uid", SOPClassUID=None)
    for kind, value, code in (
        ("uid-path-traversal", b"1.2.3/../../etc", "invalid-uid"),
        ("uid-too-long", b"1." + b"2" * 70, "invalid-uid"),
        ("uid-leading-zero", b"1.2.03", "invalid-uid"),
        ("uid-empty", b"", "missing-uid"),
        ("uid-all-spaces", b"        ", "missing-uid"),
        ("uid-with-nul-inside", b"1.2\x003.4", "invalid-uid"),
        ("uid-with-letters", b"1.2.abc", "invalid-uid"),
    ):
        b.raw(kind, "identity", code, StudyInstanceUID=element(0x0020000D, "UI", value))
    for kind, value in (
        ("verification-sop-class", b"1.2.840.10008.1.1"),
        ("unknown-sop-class", b"1.2.3.4"),
    ):
        b.raw(
            kind,
            "identity",
            "not-storable",
            SOPClassUID=element(0x00080016, "UI", value),
            dimse=False,  # no presentation context is accepted for it
        )


def _pixels(b: Builder) -> None:
    for kind, replace in (
        ("pixels-two-bytes-short", {"PixelData": element(0x7FE00010, "OW", bytes(30))}),
        ("pixels-twice-too-long", {"PixelData": element(0x7FE00010, "OW", bytes(64))}),
        ("bits-allocated-12", {"BitsAllocated": element(0x00280100, "US", us(12))}),
        ("zero-rows", {"Rows": element(0x00280010, "US", us(0))}),
        ("no-rows", {"Rows": None}),
        (
            "native-pixels-undefined-length",
            {"PixelData": element(0x7FE00010, "OW", bytes(32), length=UNDEFINED)[:12] + bytes(32)},
        ),
    ):
        b.raw(kind, "pixels", "pixel-data", **replace)
    b.written("frames-the-data-lacks", "pixels", "pixel-data", image(NumberOfFrames=3))
    b.written("ten-million-frames", "pixels", "pixel-data", image(NumberOfFrames=10**7))
    b.written("seven-samples", "pixels", "pixel-data", image(SamplesPerPixel=7))
    native = b"".join(b.elements(b.sop).values())
    b.raw(
        "compressed-syntax-native-pixels", "pixels", "pixel-data", body=native, syntax=RLELossless
    )

    def encapsulated(kind: str, expected: str, items: bytes) -> None:
        pixels = struct.pack("<HH2s2xL", 0x7FE0, 0x0010, b"OB", UNDEFINED) + items
        b.raw(kind, "pixels", expected, syntax=RLELossless, PixelData=pixels)

    fragment = item(_rle_frame())
    encapsulated("encapsulated-no-fragment", "pixel-data", item(b"") + SEQUENCE_END)
    encapsulated(
        "offset-table-out-of-order",
        "pixel-data",
        item(struct.pack("<LL", 0, 0)) + fragment + fragment + SEQUENCE_END,
    )
    encapsulated("offset-table-odd-length", "pixel-data", item(b"\0\0") + fragment + SEQUENCE_END)
    encapsulated(
        "offset-table-of-a-million-frames",
        "pixel-data",
        item(bytes(4 * 1_000_000)) + fragment + SEQUENCE_END,
    )
    encapsulated(
        "fragment-of-undefined-length",
        "pixel-data",
        item(b"") + item(b"", length=UNDEFINED) + SEQUENCE_END,
    )
    encapsulated("fragments-without-delimiter", "truncated", item(b"") + fragment)
    encapsulated("valid-encapsulated", STORED, item(struct.pack("<L", 0)) + fragment + SEQUENCE_END)


def _rle_frame() -> bytes:
    """One RLE Lossless frame of the 4 x 4 16-bit image: two segments of 16 zeros."""
    segment = b"\x0f" + bytes(16)  # literal run of 16 bytes
    header = struct.pack("<16L", 2, 64, 64 + len(segment), *([0] * 13))
    return header + segment + segment


def _compression(b: Builder) -> None:
    ds = image()
    sop = generate_uid()
    ds.SOPInstanceUID = sop
    encoded = pydicom.filebase.DicomBytesIO()
    encoded.is_little_endian, encoded.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(encoded, ds)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    stream = deflater.compress(encoded.getvalue()) + deflater.flush()
    meta = b.meta(sop, DeflatedExplicitVRLittleEndian)
    b.add("deflated-valid", "compression", STORED, meta + stream, sop)
    sop = generate_uid()
    b.add(
        "deflated-cut",
        "compression",
        "truncated",
        b.meta(sop, DeflatedExplicitVRLittleEndian) + stream[:-20],
        sop,
    )
    sop = generate_uid()
    corrupt = bytes(len(stream) // 2) + b"\xff" * 32 + stream[len(stream) // 2 :]
    b.add(
        "deflated-corrupt",
        "compression",
        "unreadable",
        b.meta(sop, DeflatedExplicitVRLittleEndian) + b"\xff\xff\xff" + corrupt,
        sop,
    )


def _text(b: Builder) -> None:
    b.written(
        "unicode-names",
        "text",
        STORED,
        image(
            SpecificCharacterSet="ISO_IR 192",
            PatientName="Ωμέγα^Zoë^山田=やまだ",
            StudyDescription="Ü" * 64,
        ),
    )
    b.written(
        "markup-and-controls-in-text",
        "text",
        STORED,
        image(
            PatientName="<script>alert(1)</script>",
            StudyDescription="a\x1b[31m\x07b'\"; DROP TABLE",
            PatientID="../../etc/passwd",
        ),
    )
    b.written(
        "unknown-character-set",
        "text",
        STORED,
        image(SpecificCharacterSet="ISO_IR 999", PatientName="Odd^Charset"),
    )
    b.written(
        "malformed-dates-and-times",
        "text",
        STORED,
        image(StudyDate="2024-13-45", StudyTime="99:99", PatientBirthDate="yesterday"),
    )
    b.written(
        "longest-text-values",
        "text",
        STORED,
        image(
            PatientName="N" * 64 + "^" + "G" * 64,
            StudyDescription="D" * 64,
            AccessionNumber="A" * 16,
        ),
    )
    private = image()
    private.add_new(0x00091010, "LO", "PRIVATE CREATOR")
    private.add_new(0x00091011, "UN", b"\x00\x01" * 500)
    b.written("private-elements", "text", STORED, private)
    padded = image()
    padded.add_new(0xFFFCFFFC, "OB", bytes(256))
    b.written("trailing-padding", "text", STORED, padded)
    empty = image()
    empty.ReferencedStudySequence = []
    empty.ReferencedSeriesSequence = [Dataset()]
    b.written("empty-sequence-and-item", "structure", STORED, empty)
    b.written(
        "implicit-vr-little-endian", "encoding", STORED, image(), syntax=ImplicitVRLittleEndian
    )


def _delimited(b: Builder) -> None:
    """Valid undefined-length encodings a writer may choose (PS3.5 7.5)."""
    code = element(0x00080100, "SH", b"X")
    seq = struct.pack("<HH2s2xL", 0x0018, 0x9346, b"SQ", UNDEFINED)
    b.raw(
        "undefined-length-sequence-and-items",
        "structure",
        STORED,
        body=b.body(seq + item(code, length=UNDEFINED) + ITEM_END + item(code) + SEQUENCE_END),
    )
    un = struct.pack("<HH2s2xL", 0x0019, 0x1010, b"UN", UNDEFINED)  # private, implicit inside
    creator = element(0x00190010, "LO", b"CORPUS")
    b.raw(
        "un-of-undefined-length",
        "structure",
        STORED,
        body=b.body(
            creator,
            un + item(implicit(0x00080100, b"XY"), length=UNDEFINED) + ITEM_END + SEQUENCE_END,
        ),
    )


def corpus(folder: Path) -> list[Specimen]:
    """Every specimen, written into `folder`."""
    b = Builder(folder)
    _structure(b)
    _file(b)
    _encoding(b)
    _identity(b)
    _pixels(b)
    _compression(b)
    _text(b)
    _delimited(b)
    for kind, name in (
        ("real-ct", "CT_small.dcm"),
        ("real-mr-big-endian", "MR_small_bigendian.dcm"),
        ("real-rle-two-frames", "SC_rgb_rle_2frame.dcm"),
        ("real-jpeg2000", "JPEG2000.dcm"),
        ("real-rt-dose", "rtdose.dcm"),
    ):
        b.bundled(kind, name)
    return b.specimens


def copy_into(specimens: list[Specimen], folder: Path) -> None:
    for specimen in specimens:
        shutil.copy(specimen.path, folder / specimen.path.name)
