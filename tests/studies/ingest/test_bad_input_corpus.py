"""A corpus of broken DICOM through the real pipeline: never a crash, a reason for each
refusal, nothing half-indexed, nothing written outside the tenant's directories."""

import hashlib
import io
import struct
from pathlib import Path

import pydicom
import pytest
from django_tenants.utils import schema_context
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from studies.ingest import Refusal, ingest_item_stage, ingest_job_create, ingest_job_submit
from studies.models import Instance, ItemOutcome, Series, Study


def valid_bytes(**extra: object) -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = (
        generate_uid(),
        generate_uid(),
        generate_uid(),
    )
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientName = "CORPUS^TEST"
    for key, value in extra.items():
        setattr(ds, key, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def with_lying_length(data: bytes) -> bytes:
    """Append an OB element whose declared length is far beyond the end of the file."""
    tag = struct.pack("<HH", 0x0009, 0x1010)  # a private tag
    return data + tag + b"OB\0\0" + struct.pack("<I", 0xFFFFFFF0) + b"\x01\x02\x03"


CORPUS = {
    "bad VR (pydicom's badVR.dcm)": Path(get_testdata_file("badVR.dcm", download=False)),
    "truncated pixel data": Path(get_testdata_file("MR_truncated.dcm", download=False)),
    "length beyond the end of the file": with_lying_length(valid_bytes()),
    "random bytes after a DICM marker": b"\0" * 128 + b"DICM" + bytes(range(256)) * 8,
    "no file meta, no marker": Path(get_testdata_file("no_meta.dcm", download=False)),
    "a huge private tag": valid_bytes(),  # replaced below: 8 MiB of private OB data
}


def corpus_files() -> list[tuple[str, bytes]]:
    files = []
    for label, source in CORPUS.items():
        data = source.read_bytes() if isinstance(source, Path) else source
        if label == "a huge private tag":
            ds = pydicom.dcmread(io.BytesIO(data))
            block = ds.private_block(0x0011, "CORPUS", create=True)
            block.add_new(0x01, "OB", b"\xab" * (8 << 20))
            out = io.BytesIO()
            ds.save_as(out, enforce_file_format=True)
            data = out.getvalue()
        files.append((label, data))
    return files


MUST_REFUSE = {
    "truncated pixel data",
    "length beyond the end of the file",
    "random bytes after a DICM marker",
    "no file meta, no marker",
}


@pytest.mark.parametrize(("label", "data"), corpus_files(), ids=list(CORPUS))
def test_each_broken_file_is_refused_with_a_reason_or_stored_whole(alpha, storage, label, data):
    with schema_context(alpha.schema_name):
        job = ingest_job_create(source="upload")
        ingest_item_stage(job=job, name=f"{label}.dcm", stream=io.BytesIO(data))
        job = ingest_job_submit(job=job, run_now=True)  # must not raise
        item = job.items.get()
        assert item.outcome in {ItemOutcome.REJECTED, ItemOutcome.STORED}, label
        if label in MUST_REFUSE:
            assert item.outcome == ItemOutcome.REJECTED, label
        if item.outcome == ItemOutcome.REJECTED:
            assert item.reason and item.reason_code, label
            # Kept whole, except what is not DICOM at all: its first KiB (and its hash).
            kept = data[:1024] if item.reason_code == Refusal.NOT_DICOM else data
            assert Path(item.quarantine_path).read_bytes() == kept
            assert item.sha256 == hashlib.sha256(data).hexdigest()
            assert Path(item.quarantine_path).is_relative_to(alpha.storage_root)
            assert not Instance.objects.exists() and not Study.objects.exists()
            assert not Series.objects.exists()
        else:  # accepted: then it is whole, indexed once and byte-identical
            instance = Instance.objects.get()
            assert instance.size_bytes == len(data)
            assert Study.objects.get().num_instances == 1
