"""The periodic jobs on real files: watermark migration, retention, verification, quarantine."""

import io
import os
import time
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
from django.utils import timezone
from django_tenants.utils import schema_context
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from audit.models import AuditEvent
from configuration.models import RetentionRule
from configuration.selectors import tenant_settings
from jobs.models import JobRun, JobStatus
from studies.ingest import ingest_item_stage, ingest_job_create, ingest_job_submit
from studies.maintenance.services import (
    SYSTEM_ACTOR,
    file_sha256,
    media_migrate_watermarks,
    quarantine_purge,
    retention_apply,
    storage_verify,
)
from studies.models import IngestItem, Instance, StorageMedium, Study
from studies.storage import instance_path
from studies.tasks import apply_retention, verify_storage


def new_study(name: str = "CT_small.dcm", modality: str | None = None) -> bytes:
    """A bundled file made into a study of its own (fresh study, series and SOP UIDs)."""
    ds = pydicom.dcmread(get_testdata_file(name, download=False))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    if modality:
        ds.Modality = modality
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def ingest(*files: bytes):
    job = ingest_job_create(source="upload", description="maintenance test")
    for index, data in enumerate(files):
        ingest_item_stage(job=job, name=f"f{index}.dcm", stream=io.BytesIO(data))
    return ingest_job_submit(job=job, run_now=True)


def received(days_ago: float, *studies: Study) -> None:
    Study.objects.filter(pk__in=[s.pk for s in studies]).update(
        received_at=timezone.now() - timedelta(days=days_ago)
    )


@pytest.fixture
def in_alpha(alpha, storage):
    with schema_context(alpha.schema_name):
        yield alpha


def test_migration_moves_the_oldest_studies_until_below_the_low_watermark(
    in_alpha, add_medium, django_capture_on_commit_callbacks
):
    second = add_medium("second", priority=-1)
    ingest(new_study(), new_study(), new_study())
    oldest, middle, newest = Study.objects.order_by("pk")
    received(3, oldest)
    received(2, middle)
    received(1, newest)
    before = {i.sop_instance_uid: (i.sha256, instance_path(i)) for i in Instance.objects.all()}
    default = StorageMedium.objects.get(name="default")
    assert default.used_bytes == sum(s.size_bytes for s in (oldest, middle, newest))
    # Full at 100 %: above the high mark (90 %); the job stops below the low mark (50 %).
    StorageMedium.objects.filter(pk=default.pk).update(
        capacity_bytes=default.used_bytes, low_watermark=50
    )

    counts = media_migrate_watermarks()

    assert counts["moved"] == 2 and counts["media"] == 1 and counts["skipped"] == 0
    on = {i.series.study_id: i.medium.name for i in Instance.objects.select_related("series")}
    assert on == {oldest.pk: "second", middle.pk: "second", newest.pk: "default"}
    for instance in Instance.objects.select_related("medium"):
        sha, old_path = before[instance.sop_instance_uid]
        assert instance.sha256 == sha and file_sha256(instance_path(instance)) == sha
        assert old_path.exists() == (instance.medium.name == "default")
    default.refresh_from_db()
    second.refresh_from_db()
    assert default.used_bytes == newest.size_bytes
    assert second.used_bytes == oldest.size_bytes + middle.size_bytes
    assert default.used_bytes * 100 < default.capacity_bytes * default.low_watermark
    assert media_migrate_watermarks()["moved"] == 0  # below the high mark now: nothing to do


def test_migration_without_a_medium_with_room_moves_nothing(in_alpha, add_medium):
    add_medium("tiny", priority=-1, capacity_bytes=100)
    ingest(new_study())
    default = StorageMedium.objects.get(name="default")
    StorageMedium.objects.filter(pk=default.pk).update(capacity_bytes=default.used_bytes)
    counts = media_migrate_watermarks()
    assert counts["moved"] == 0 and counts["stuck"] == 1
    instance = Instance.objects.select_related("medium").get()
    assert instance.medium.name == "default" and instance_path(instance).exists()


def test_retention_deletes_only_studies_strictly_past_the_rule(
    in_alpha, django_capture_on_commit_callbacks
):
    for study in (new_study(), new_study(), new_study("MR_small.dcm"), new_study()):
        ingest(study)  # one batch each: the ids follow the order of arrival
    old_ct, young_ct, old_mr, new_ct = Study.objects.order_by("pk")
    received(31, old_ct, old_mr)
    received(29, young_ct)
    RetentionRule.objects.create(modality="CT", days=30)
    RetentionRule.objects.create(modality="MR", days=60)
    RetentionRule.objects.create(modality="US", days=1, enabled=False)
    old_file = instance_path(Instance.objects.get(series__study=old_ct))

    with django_capture_on_commit_callbacks(execute=True):
        counts = retention_apply()

    assert counts == {"rules": 2, "deleted": 1, "bytes": old_ct.size_bytes}
    assert set(Study.objects.values_list("pk", flat=True)) == {young_ct.pk, old_mr.pk, new_ct.pk}
    assert not old_file.exists()
    event = AuditEvent.objects.get(action="retention.delete")
    assert event.actor_name == SYSTEM_ACTOR and event.object_id == old_ct.study_instance_uid
    assert event.details["rule"] == {"modality": "CT", "days": 30}
    with django_capture_on_commit_callbacks(execute=True):
        assert retention_apply()["deleted"] == 0  # re-run: nothing more to delete


def test_retention_is_capped_per_run_and_the_next_run_continues(in_alpha, settings):
    settings.PORTAL_JOB_BATCH_LIMIT = 2
    ingest(new_study(), new_study(), new_study())
    received(40, *Study.objects.all())
    RetentionRule.objects.create(modality="*", days=30)
    assert retention_apply()["deleted"] == 2
    assert Study.objects.count() == 1
    assert retention_apply()["deleted"] == 1
    assert not Study.objects.exists()


def test_verification_reports_missing_truncated_changed_and_orphan_files(in_alpha):
    ingest(*(new_study() for _ in range(5)))
    gone, truncated, changed, intact, _ = Instance.objects.select_related("medium").order_by("pk")
    instance_path(gone).unlink()
    path = instance_path(truncated)
    path.write_bytes(path.read_bytes()[:-10])
    path = instance_path(changed)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    root = Path(intact.medium.root)
    (root / "stray" / "orphan.dcm").parent.mkdir()
    (root / "stray" / "orphan.dcm").write_bytes(b"not indexed")
    (root / ".thumbnails").mkdir()
    (root / ".thumbnails" / "x.png").write_bytes(b"png")
    (root / "stray" / ".orphan.dcm.123.tmp").write_bytes(b"half written")

    report = storage_verify()

    assert {k: report[k] for k in ("checked", "missing", "size_mismatch")} == {
        "checked": 5,
        "missing": 1,
        "size_mismatch": 1,
    }
    assert report["checksum_mismatch"] == 1 and report["orphans"] == 1
    assert report["media"]["default"]["orphans"] == 1
    problems = {(d["problem"], d["path"]) for d in report["details"]}
    assert problems == {
        ("missing", gone.relative_path),
        ("size_mismatch", truncated.relative_path),
        ("checksum_mismatch", changed.relative_path),
        ("orphans", "stray/orphan.dcm"),
    }
    assert report["cursor"] == 0  # the pass is complete
    assert (root / "stray" / "orphan.dcm").exists() and Instance.objects.count() == 5


def test_verification_is_capped_and_continues_where_it_stopped(in_alpha, settings):
    settings.PORTAL_JOB_BATCH_LIMIT = 2
    ingest(*(new_study() for _ in range(3)))
    ids = list(Instance.objects.order_by("pk").values_list("pk", flat=True))
    instance_path(Instance.objects.get(pk=ids[2])).unlink()
    first = storage_verify()
    assert first["checked"] == 2 and first["missing"] == 0 and first["cursor"] == ids[1]
    second = storage_verify(after_id=first["cursor"])
    assert second["checked"] == 1 and second["missing"] == 1 and second["cursor"] == 0


def test_the_verification_task_records_its_report_and_continues_next_period(in_alpha, settings):
    settings.PORTAL_JOB_BATCH_LIMIT = 1
    ingest(new_study(), new_study())
    verify_storage(period="p1")
    verify_storage(period="p1")  # a second delivery of the same period does nothing
    verify_storage(period="p2")
    runs = JobRun.objects.filter(job="verification", period__in=["p1", "p2"]).order_by("period")
    assert [(r.period, r.status, r.counts["checked"]) for r in runs] == [
        ("p1", JobStatus.SUCCEEDED, 1),
        ("p2", JobStatus.SUCCEEDED, 1),
    ]
    assert runs[1].counts["cursor"] == 0 and runs[0].counts["cursor"] > 0


def test_a_switched_off_job_records_nothing_and_deletes_nothing(in_alpha):
    ingest(new_study())
    received(40, *Study.objects.all())
    RetentionRule.objects.create(modality="*", days=30)
    assert tenant_settings().job_retention is False  # off until switched on
    assert apply_retention(period="p1") is None
    assert Study.objects.count() == 1 and not JobRun.objects.filter(job="retention").exists()


def test_quarantine_purge_removes_only_files_older_than_the_limit(
    in_alpha, django_capture_on_commit_callbacks
):
    job = ingest(b"not dicom at all", b"neither is this")
    old_item, young_item = IngestItem.objects.filter(job=job).order_by("pk")
    old_path, young_path = Path(old_item.quarantine_path), Path(young_item.quarantine_path)
    assert old_path.exists() and young_path.exists()
    now = time.time()
    os.utime(old_path, (now - 31 * 86400, now - 31 * 86400))
    os.utime(young_path, (now - 29 * 86400, now - 29 * 86400))

    with django_capture_on_commit_callbacks(execute=True):
        counts = quarantine_purge(older_than_days=30)

    assert counts["deleted"] == 1
    assert not old_path.exists() and young_path.exists()
    old_item.refresh_from_db()
    young_item.refresh_from_db()
    assert old_item.quarantine_path == "" and old_item.reason  # the reason stays
    assert young_item.quarantine_path == str(young_path)
    assert AuditEvent.objects.filter(action="quarantine.purge").count() == 1
