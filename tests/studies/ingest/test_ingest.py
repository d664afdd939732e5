"""The ingest pipeline on real files: byte-identical storage, index fields, duplicates,
rejections into quarantine, quota, failing media, idempotency and tenant isolation."""

import hashlib
import io
from pathlib import Path

import pydicom
import pytest
from django_tenants.utils import schema_context
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from configuration.selectors import tenant_settings
from studies.dicom import parse_file
from studies.ingest import (
    ingest_item_stage,
    ingest_items_process,
    ingest_job_create,
    ingest_job_submit,
)
from studies.models import (
    IngestJobStatus,
    Instance,
    ItemOutcome,
    MediumStatus,
    Series,
    StorageMedium,
    Study,
)
from studies.storage import instance_path, instance_relative_path

FILES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "JPEG2000.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "SC_rgb_rle_2frame.dcm",
    "JPEG-lossy.dcm",
    "rtdose.dcm",
    "MR_small_bigendian.dcm",
]


def bundled(name: str) -> Path:
    return Path(get_testdata_file(name, download=False))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ingest(files: list[tuple[str, bytes]], source: str = "upload"):
    """Stage and process files synchronously in the active tenant; returns the job."""
    job = ingest_job_create(source=source, description="test")
    for name, data in files:
        ingest_item_stage(job=job, name=name, stream=io.BytesIO(data))
    return ingest_job_submit(job=job, run_now=True)


@pytest.fixture
def in_alpha(alpha, storage):
    with schema_context(alpha.schema_name):
        yield alpha


def distinct_instances(names: list[str]) -> list[tuple[str, bytes]]:
    """The bundled files, with fresh SOP Instance UIDs where pydicom ships one instance in
    several transfer syntaxes (the MR_small variants), so each is a new instance."""
    seen: set[str] = set()
    files = []
    for name in names:
        data = bundled(name).read_bytes()
        ds = pydicom.dcmread(io.BytesIO(data))
        if ds.SOPInstanceUID in seen:
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            out = io.BytesIO()
            ds.save_as(out, enforce_file_format=True)
            data = out.getvalue()
        seen.add(ds.SOPInstanceUID)
        files.append((name, data))
    return files


def test_real_files_are_stored_byte_identical_and_indexed_as_in_the_file(in_alpha):
    files = distinct_instances(FILES)
    job = ingest(files)
    assert (job.status, job.total, job.stored, job.rejected) == (
        IngestJobStatus.DONE,
        len(FILES),
        len(FILES),
        0,
    )
    for name, data in files:
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        instance = Instance.objects.select_related("series__study", "medium").get(
            sop_instance_uid=header.SOPInstanceUID
        )
        stored = instance_path(instance)
        assert stored.read_bytes() == data, name
        assert instance.sha256 == hashlib.sha256(data).hexdigest()
        assert instance.size_bytes == len(data)
        assert instance.transfer_syntax_uid == header.file_meta.TransferSyntaxUID
        assert instance.series.series_instance_uid == header.SeriesInstanceUID
        assert instance.series.study.study_instance_uid == header.StudyInstanceUID
        assert instance.rows == header.get("Rows")
        assert not any(p.name.endswith(".tmp") for p in stored.parent.iterdir())


def test_counts_and_sizes_follow_the_instances(in_alpha):
    base = pydicom.dcmread(bundled("CT_small.dcm"))
    study_uid, series_a, series_b = generate_uid(), generate_uid(), generate_uid()
    files = []
    for series_uid in (series_a, series_a, series_b):
        base.StudyInstanceUID, base.SeriesInstanceUID = study_uid, series_uid
        base.SOPInstanceUID = generate_uid()
        base.file_meta.MediaStorageSOPInstanceUID = base.SOPInstanceUID
        out = io.BytesIO()
        base.save_as(out, enforce_file_format=True)
        files.append((f"{base.SOPInstanceUID}.dcm", out.getvalue()))
    ingest(files)
    study = Study.objects.get(study_instance_uid=study_uid)
    assert (study.num_series, study.num_instances) == (2, 3)
    assert study.size_bytes == sum(len(data) for _, data in files)
    assert study.modalities == ["CT"]
    assert Series.objects.get(series_instance_uid=series_a).num_instances == 2


def test_duplicates_keep_the_first_copy_by_default(in_alpha):
    data = bundled("MR_small.dcm").read_bytes()
    ingest([("a.dcm", data)])
    job = ingest([("again.dcm", data)])
    assert (job.stored, job.duplicates) == (0, 1)
    item = job.items.get()
    assert item.outcome == ItemOutcome.DUPLICATE and "first copy" in item.reason
    assert Instance.objects.count() == 1 and Study.objects.get().num_instances == 1


def test_replace_policy_swaps_in_the_new_copy(in_alpha):
    settings_row = tenant_settings()
    settings_row.duplicate_policy = "replace"
    settings_row.save()
    ds = pydicom.dcmread(bundled("MR_small.dcm"))
    first = io.BytesIO()
    ds.save_as(first, enforce_file_format=True)
    ingest([("first.dcm", first.getvalue())])
    ds.SeriesDescription = "corrected"
    second = io.BytesIO()
    ds.save_as(second, enforce_file_format=True)
    job = ingest([("second.dcm", second.getvalue())])
    assert job.items.get().outcome == ItemOutcome.REPLACED
    instance = Instance.objects.get()
    assert instance_path(instance).read_bytes() == second.getvalue()
    assert Study.objects.get().num_instances == 1
    assert Study.objects.get().size_bytes == len(second.getvalue())


@pytest.mark.parametrize(
    ("data", "codes"),
    [
        (b"not dicom at all " * 20, {"not-dicom"}),
        (bundled("CT_small.dcm").read_bytes()[:300], {"unreadable", "missing-uid"}),
        (b"", {"not-dicom"}),
    ],
)
def test_bad_files_are_rejected_with_a_reason_and_quarantined(in_alpha, data, codes):
    job = ingest([("bad.dcm", data)])
    item = job.items.get()
    assert item.outcome == ItemOutcome.REJECTED and item.reason
    assert item.reason_code in codes
    assert Path(item.quarantine_path).read_bytes() == data
    assert job.status == IngestJobStatus.FAILED and "rejected" in job.error
    assert not Instance.objects.exists() and not Study.objects.exists()


def test_a_file_past_the_quota_is_refused_as_it_arrives(in_alpha):
    in_alpha.quota_bytes = 1000
    in_alpha.save(update_fields=["quota_bytes"])
    job = ingest([("ct.dcm", bundled("CT_small.dcm").read_bytes())])
    item = job.items.get()
    assert item.reason_code == "quota" and "quota" in item.reason
    assert item.staged_path == "" and item.quarantine_path == ""  # cut off, not kept
    assert not Instance.objects.exists()


def test_quota_used_up_while_staged_is_refused_clearly_and_the_file_kept(in_alpha):
    job = ingest_job_create(source="upload")
    ingest_item_stage(
        job=job, name="ct.dcm", stream=io.BytesIO(bundled("CT_small.dcm").read_bytes())
    )
    in_alpha.quota_bytes = 1000
    in_alpha.save(update_fields=["quota_bytes"])
    item = ingest_job_submit(job=job, run_now=True).items.get()
    assert item.reason_code == "quota" and "quota" in item.reason
    assert Path(item.quarantine_path).is_file()  # kept for a retry once room is made
    assert not Instance.objects.exists()


def test_a_full_medium_sends_files_to_the_next_one(in_alpha, add_medium):
    StorageMedium.objects.filter(name="default").update(used_bytes=4 << 30)  # above 90 %
    second = add_medium("second", capacity_bytes=1 << 30)
    ingest([("ct.dcm", bundled("CT_small.dcm").read_bytes())])
    assert Instance.objects.get().medium_id == second.pk


def test_no_medium_left_fails_with_a_reason(in_alpha):
    StorageMedium.objects.update(status=MediumStatus.READ_ONLY)
    job = ingest([("ct.dcm", bundled("CT_small.dcm").read_bytes())])
    item = job.items.get()
    assert item.reason_code == "no-medium" and "kept in quarantine" in item.reason
    assert Path(item.quarantine_path).is_file()


def test_processing_again_changes_nothing(in_alpha):
    job = ingest([("ct.dcm", bundled("CT_small.dcm").read_bytes())])
    item = job.items.get()
    assert ingest_items_process(item_ids=[item.pk])[item.pk].outcome == ItemOutcome.STORED
    assert Instance.objects.count() == 1 and Study.objects.get().num_instances == 1


def test_a_file_left_by_a_crash_before_commit_is_adopted_not_duplicated(in_alpha):
    """A worker killed between rename and commit leaves the final file without a row;
    processing the still-pending item again writes it again and indexes it once."""
    data = bundled("CT_small.dcm").read_bytes()
    job = ingest_job_create(source="upload")
    item = ingest_item_stage(job=job, name="ct.dcm", stream=io.BytesIO(data))
    parsed = parse_file(item.staged_path, max_bytes=1 << 30)
    leftover = Path(StorageMedium.objects.get(name="default").root) / instance_relative_path(
        study_uid=parsed.study_instance_uid,
        series_uid=parsed.series_instance_uid,
        sop_uid=parsed.sop_instance_uid,
    )
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(data[:100])  # half-written by the killed worker
    ingest_job_submit(job=job, run_now=True)
    assert Instance.objects.count() == 1
    assert leftover.read_bytes() == data


def test_the_same_file_in_two_tenants_is_two_copies(alpha, beta, storage):
    data = bundled("CT_small.dcm").read_bytes()
    paths = []
    for tenant in (alpha, beta):
        with schema_context(tenant.schema_name):
            ingest([("ct.dcm", data)])
            paths.append(instance_path(Instance.objects.get()))
    assert paths[0] != paths[1]
    assert str(paths[0]).startswith(alpha.storage_root)
    assert str(paths[1]).startswith(beta.storage_root)
    with schema_context(beta.schema_name):
        Instance.objects.all().delete()
    with schema_context(alpha.schema_name):
        assert Instance.objects.count() == 1 and paths[0].read_bytes() == data


def test_a_generated_us_multiframe_is_stored_byte_identical_with_its_frames(in_alpha):
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # Ultrasound Multi-frame Image Storage
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = (
        generate_uid(),
        generate_uid(),
        generate_uid(),
    )
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID = "US", "ECHO^ANNA", "US-1"
    frames = (np.arange(12 * 48 * 64) % 251).astype(np.uint8).reshape(12, 48, 64)
    ds.NumberOfFrames, ds.Rows, ds.Columns = 12, 48, 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = frames.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)

    ingest([("cine.dcm", out.getvalue())])
    instance = Instance.objects.get(sop_instance_uid=ds.SOPInstanceUID)
    assert instance_path(instance).read_bytes() == out.getvalue()
    assert (instance.number_of_frames, instance.rows, instance.columns) == (12, 48, 64)
    assert Study.objects.get().modalities == ["US"]
