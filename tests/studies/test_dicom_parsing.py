"""studies/dicom.py without a database: real files in, index fields or one clear reason out."""

import shutil
import tracemalloc
import zlib
from pathlib import Path

import pydicom
import pydicom.filewriter
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

from studies.dicom import DicomParseError, is_valid_uid, parse_file

LIMIT = 1 << 30


def bundled(name: str) -> Path:
    return Path(get_testdata_file(name, download=False))


def write(dataset: Dataset, path: Path) -> Path:
    dataset.save_as(path, enforce_file_format=True)
    return path


def minimal(**overrides: object) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for key, value in overrides.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    return ds


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        "MR_small.dcm",
        "MR_small_RLE.dcm",
        "JPEG2000.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "SC_rgb_rle_2frame.dcm",
        "rtdose.dcm",
        "MR_small_bigendian.dcm",
    ],
)
def test_real_files_give_the_index_fields_as_in_the_file(name):
    path = bundled(name)
    parsed = parse_file(path, max_bytes=LIMIT)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert parsed.sop_instance_uid == ds.SOPInstanceUID
    assert parsed.study_instance_uid == ds.StudyInstanceUID
    assert parsed.series_instance_uid == ds.SeriesInstanceUID
    assert parsed.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID
    assert parsed.modality == str(ds.get("Modality", "")).upper()
    assert parsed.rows == ds.get("Rows") and parsed.columns == ds.get("Columns")
    assert parsed.patient_name == str(ds.get("PatientName", "")).strip()


def test_multiframe_and_dates():
    parsed = parse_file(bundled("SC_rgb_rle_2frame.dcm"), max_bytes=LIMIT)
    assert parsed.number_of_frames == 2
    ct = parse_file(bundled("CT_small.dcm"), max_bytes=LIMIT)
    assert ct.study_date is not None and ct.study_date.year > 1900


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"SOPInstanceUID": None}, "missing-uid"),
        ({"StudyInstanceUID": None}, "missing-uid"),
        ({"SeriesInstanceUID": "1.2.3.04"}, "invalid-uid"),  # leading zero in a component
        ({"SeriesInstanceUID": "1.2.3/../../etc"}, "invalid-uid"),
        ({"StudyInstanceUID": "1." + "2" * 70}, "invalid-uid"),
        ({"SOPClassUID": "1.2.840.10008.1.1"}, "not-storable"),  # Verification is not storage
        ({"SOPClassUID": "1.2.3.4.5"}, "not-storable"),
    ],
)
def test_bad_identifiers_are_refused_with_a_reason(tmp_path, overrides, code):
    path = write(minimal(**overrides), tmp_path / "x.dcm")
    with pytest.raises(DicomParseError) as raised:
        parse_file(path, max_bytes=LIMIT)
    assert raised.value.code == code and raised.value.message


def test_non_dicom_truncated_and_oversized_files_are_refused(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello " * 100)
    with pytest.raises(DicomParseError, match="no 'DICM' marker"):
        parse_file(text, max_bytes=LIMIT)
    tiny = tmp_path / "tiny.dcm"
    tiny.write_bytes(b"\0" * 10)
    with pytest.raises(DicomParseError, match="too short"):
        parse_file(tiny, max_bytes=LIMIT)
    big = write(minimal(), tmp_path / "big.dcm")
    with pytest.raises(DicomParseError) as raised:
        parse_file(big, max_bytes=100)
    assert raised.value.code == "too-large"
    truncated = tmp_path / "cut.dcm"
    shutil.copy(bundled("CT_small.dcm"), truncated)
    with truncated.open("r+b") as handle:
        handle.truncate(200)
    with pytest.raises(DicomParseError):
        parse_file(truncated, max_bytes=LIMIT)


def test_deeply_nested_sequences_are_refused_not_crashing(tmp_path):
    ds = minimal()
    inner = Dataset()
    inner.CodeValue = "X"
    for _ in range(40):
        wrapper = Dataset()
        wrapper.ContentSequence = [inner]
        inner = wrapper
    ds.ContentSequence = [inner]
    path = write(ds, tmp_path / "deep.dcm")
    with pytest.raises(DicomParseError) as raised:
        parse_file(path, max_bytes=LIMIT)
    assert raised.value.code == "too-deep"
    assert "more than 32 levels" in raised.value.message


@pytest.mark.parametrize(
    ("uid", "valid"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", True),
        ("0", True),
        ("1.0.2", True),
        ("", False),
        ("1..2", False),
        (".1", False),
        ("1.", False),
        ("1.02", False),
        ("1.2a", False),
        ("1." * 32 + "1", False),
    ],
)
def test_uid_syntax(uid, valid):
    assert is_valid_uid(uid) is valid


# -- deflated data sets: inflated by us, a chunk at a time, never past the limit ----------


def deflated_file(path: Path, *, pixel_bytes: int, cut: int = 0) -> Path:
    """A Deflated Explicit VR Little Endian file whose data set holds `pixel_bytes` zeros
    as pixel data (a bomb when large: zeros deflate a thousandfold); compressed a chunk at a
    time, so making it costs no memory. `cut` drops that many bytes off the end."""
    ds = minimal()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    # 16-bit, 4096 columns: as many rows as the zeros fill (a multiple of 8 KiB here).
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.SamplesPerPixel = pixel_bytes // 8192, 4096, 16, 1
    header = DicomBytesIO()
    header.is_little_endian, header.is_implicit_VR = True, False  # what deflated encodes
    pydicom.filewriter.write_dataset(header, ds)
    pixels = b"\xe0\x7f\x10\x00OB\x00\x00" + pixel_bytes.to_bytes(4, "little")
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = bytearray(deflater.compress(header.getvalue() + pixels))
    zeros = bytes(1 << 20)
    for start in range(0, pixel_bytes, len(zeros)):
        body += deflater.compress(zeros[: min(len(zeros), pixel_bytes - start)])
    body += deflater.flush()
    with path.open("wb") as out:
        out.write(b"\x00" * 128 + b"DICM")
        pydicom.filewriter.write_file_meta_info(out, ds.file_meta)
        out.write(bytes(body[: len(body) - cut]))
    return path


def test_a_deflated_instance_is_parsed_from_what_it_inflates_to(tmp_path):
    path = shutil.copy(bundled("image_dfl.dcm"), tmp_path / "dfl.dcm")
    expected = pydicom.dcmread(path)  # pydicom's own inflation, on a trusted file
    parsed = parse_file(path, max_bytes=LIMIT)
    assert parsed.transfer_syntax_uid == DeflatedExplicitVRLittleEndian
    assert parsed.sop_instance_uid == expected.SOPInstanceUID
    assert (parsed.rows, parsed.columns) == (expected.Rows, expected.Columns)
    assert list(tmp_path.iterdir()) == [Path(path)]  # the inflated copy is gone


def test_a_deflated_instance_larger_inflated_than_its_file_is_not_truncated(tmp_path):
    path = deflated_file(tmp_path / "big.dcm", pixel_bytes=4 << 20)
    assert path.stat().st_size < 64 << 10
    assert parse_file(path, max_bytes=LIMIT).transfer_syntax_uid == DeflatedExplicitVRLittleEndian


def test_a_deflate_bomb_is_refused_without_inflating_it(tmp_path):
    path = deflated_file(tmp_path / "bomb.dcm", pixel_bytes=256 << 20)  # 256 MiB of zeros
    assert path.stat().st_size < 512 << 10
    tracemalloc.start()
    try:
        with pytest.raises(DicomParseError) as refused:
            parse_file(path, max_bytes=16 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.code == "inflates-too-large"
    assert "16777216" in refused.value.message
    assert peak < 8 << 20  # a few chunks, not the 256 MiB the file claims
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.dcm"]


def test_a_cut_or_corrupt_deflate_stream_is_refused(tmp_path):
    cut = deflated_file(tmp_path / "cut.dcm", pixel_bytes=1 << 20, cut=40)
    with pytest.raises(DicomParseError) as refused:
        parse_file(cut, max_bytes=LIMIT)
    assert refused.value.code == "truncated"
    corrupt = deflated_file(tmp_path / "corrupt.dcm", pixel_bytes=1 << 20)
    data = bytearray(corrupt.read_bytes())
    data[400:420] = b"\xff" * 20
    corrupt.write_bytes(bytes(data))
    with pytest.raises(DicomParseError) as refused:
        parse_file(corrupt, max_bytes=LIMIT)
    assert refused.value.code in {"unreadable", "truncated"}


# -- pixel data a viewer would choke on, judged from the header and the element's length ----


def image(**overrides: object) -> Dataset:
    header = {"Rows": 4, "Columns": 4, "BitsAllocated": 16, "BitsStored": 16}
    given = {key: value for key, value in overrides.items() if value is not None}
    ds = minimal(**{**header, "SamplesPerPixel": 1, **given})
    for key in overrides.keys() - given.keys():  # None: the attribute is absent
        delattr(ds, key)
    if "PixelData" not in overrides:
        ds.PixelData = bytes(4 * 4 * 2)
    return ds


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"PixelData": bytes(30)}, "need 32"),  # two bytes short
        ({"PixelData": bytes(64)}, "need 32"),  # twice too long
        ({"NumberOfFrames": 3}, "need 96"),  # frames the data does not hold
        ({"BitsAllocated": 12}, "BitsAllocated 12"),
        ({"SamplesPerPixel": 7}, "SamplesPerPixel 7"),
        ({"Rows": 0}, "0 x 4 pixels"),
        ({"NumberOfFrames": 10**7}, "at most 100000 frames"),
        ({"Rows": None}, "without Rows"),
    ],
)
def test_pixel_data_that_contradicts_its_header_is_refused(tmp_path, overrides, says):
    with pytest.raises(DicomParseError) as refused:
        parse_file(write(image(**overrides), tmp_path / "x.dcm"), max_bytes=LIMIT)
    assert refused.value.code == "pixel-data" and says in refused.value.message


def test_pixel_data_that_fits_its_header_is_taken(tmp_path):
    parsed = parse_file(write(image(), tmp_path / "ok.dcm"), max_bytes=LIMIT)
    assert (parsed.rows, parsed.columns) == (4, 4)
    odd = image(Rows=3, Columns=3, BitsAllocated=8, BitsStored=8, PixelData=bytes(10))
    assert parse_file(write(odd, tmp_path / "odd.dcm"), max_bytes=LIMIT).rows == 3  # padded


def test_compressed_pixel_data_must_be_encapsulated(tmp_path):
    path = write(image(), tmp_path / "rle.dcm")
    # The meta now says RLE Lossless (a UID of the same length); the pixels stay native,
    # of defined length, not in fragments. pydicom would not write such a file.
    data = path.read_bytes()
    path.write_bytes(data.replace(b"1.2.840.10008.1.2.1\x00", RLELossless.encode() + b"\x00", 1))
    with pytest.raises(DicomParseError) as refused:
        parse_file(path, max_bytes=LIMIT)
    assert refused.value.code == "pixel-data" and "undefined length" in refused.value.message
