"""The batch engine: statements per batch, identity rules, differing duplicates, bytes written
once, poison items, recovery of jobs whose tasks were lost, and concurrent batches of one
study leaving exact counts."""

import hashlib
import io
import os
import shutil
import threading
from datetime import timedelta
from pathlib import Path
from unittest import mock

import pydicom
import pytest
from django.db import connection, connections
from django.utils import timezone
from django_tenants.utils import schema_context
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from configuration.selectors import tenant_settings
from studies.ingest import (
    BATCH_SIZE,
    JobStaging,
    Refusal,
    ingest_item_stage,
    ingest_items_process,
    ingest_job_create,
    ingest_job_submit,
    ingest_jobs_recover,
)
from studies.ingest.outcomes import StoreStatus, store_status
from studies.models import (
    IngestItem,
    IngestJob,
    Instance,
    ItemOutcome,
    Patient,
    Series,
    StorageMedium,
    Study,
)
from studies.storage import instance_path


def ct(**tags: object) -> bytes:
    """CT_small.dcm as a new instance (fresh SOP Instance UID), with `tags` replaced."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    ds.SOPInstanceUID = generate_uid()
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def stage(*files: bytes) -> tuple[IngestJob, list[IngestItem]]:
    job = ingest_job_create(source="upload", description="engine test")
    items = [
        ingest_item_stage(job=job, name=f"{i}.dcm", stream=io.BytesIO(data))
        for i, data in enumerate(files)
    ]
    return job, items


def ingest(*files: bytes) -> IngestJob:
    job, _items = stage(*files)
    return ingest_job_submit(job=job, run_now=True)


@pytest.fixture
def in_alpha(alpha, storage):
    with schema_context(alpha.schema_name):
        yield alpha


# -- the hot path --------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, BATCH_SIZE])
def test_a_batch_costs_the_same_statements_whatever_its_size(
    in_alpha, django_assert_max_num_queries, count
):
    study, series = generate_uid(), generate_uid()
    _job, items = stage(
        *(ct(StudyInstanceUID=study, SeriesInstanceUID=series) for _ in range(count))
    )
    ingest_items_process(item_ids=[items[0].pk])  # the study and series exist from here on
    rest = [item.pk for item in items[1:]] or [stage(ct(StudyInstanceUID=study))[1][0].pk]
    # Claim, tenant, settings, savepoint, the reads (item locks, media, placement locks,
    # studies, series, instances) as one message, a new series (the one-instance case
    # here), the writes (instances, counters, media usage, outcomes, job) as one message,
    # release: at most 8 for 1 instance and for 49.
    with django_assert_max_num_queries(8):
        results = ingest_items_process(item_ids=rest)
    assert {r.outcome for r in results.values()} == {ItemOutcome.STORED}
    assert Study.objects.get(study_instance_uid=study).num_instances == len(rest) + 1


@pytest.mark.parametrize("count", [1, 40])
def test_staging_a_request_costs_the_same_statements_whatever_its_size(
    in_alpha, django_assert_max_num_queries, count
):
    job = ingest_job_create(source="upload", description="staging test")
    # The tenant (schema_context sets a stand-in), savepoint, rows, job counters, release.
    with django_assert_max_num_queries(5), JobStaging(job) as staging:
        items = [staging.stage(name=f"{i}.dcm", stream=io.BytesIO(ct())) for i in range(count)]
        staging.refuse(name="evil.zip/../x", code="zip-slip", reason="unsafe")
    job.refresh_from_db()
    assert (job.total, job.rejected) == (count + 1, 1)
    assert all(item.pk for item in items)
    assert all(Path(item.staged_path).is_file() for item in items)
    shutil.rmtree(Path(items[0].staged_path).parent)  # the disk does not roll back


def test_the_search_path_is_set_once_per_batch_not_per_statement(alpha, beta, storage):
    statements: list[str] = []

    def record(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        statements.append(sql)
        return execute(sql, params, many, context)

    with schema_context(alpha.schema_name):
        _job, items = stage(ct(), ct())
    with schema_context(beta.schema_name):
        Study.objects.count()  # the connection is on beta's schema now
    with schema_context(alpha.schema_name), connection.execute_wrapper(record):
        ingest_items_process(item_ids=[i.pk for i in items])
    sets = [sql for sql in statements if sql.lower().startswith("set search_path")]
    # Claim, tenant, savepoint, reads, new study (patients, study, series), writes, release.
    assert len(sets) == 1 and len(statements) >= 8


def test_bytes_are_written_once_and_linked_into_place(in_alpha):
    _job, [item] = stage(ct())
    staged_inode = os.stat(item.staged_path).st_ino
    ingest_items_process(item_ids=[item.pk])
    instance = Instance.objects.get()
    path = instance_path(instance)
    assert path.stat().st_ino == staged_inode  # the staged file itself, linked: no copy
    assert not Path(item.staged_path).exists()
    item.refresh_from_db()
    assert item.sha256 == instance.sha256 and len(item.sha256) == 64


# -- identity ------------------------------------------------------------------------------


def test_an_instance_of_another_patient_is_never_merged_into_a_study(in_alpha):
    study = generate_uid()
    ingest(ct(StudyInstanceUID=study, PatientID="P-1"))
    job = ingest(ct(StudyInstanceUID=study, PatientID="P-2"))
    item = job.items.get()
    assert item.outcome == ItemOutcome.REJECTED and item.reason_code == Refusal.IDENTITY_CONFLICT
    assert "P-1" in item.reason and "P-2" in item.reason
    assert Path(item.quarantine_path).is_file()
    assert Study.objects.get(study_instance_uid=study).num_instances == 1
    assert store_status(outcome=item.outcome, reason_code=item.reason_code) == (
        StoreStatus.IDENTITY_CONFLICT
    )


def test_the_issuer_of_patient_id_is_part_of_the_identity(in_alpha):
    study = generate_uid()
    ingest(ct(StudyInstanceUID=study, PatientID="P-1", IssuerOfPatientID="HOSP-A"))
    job = ingest(ct(StudyInstanceUID=study, PatientID="P-1", IssuerOfPatientID="HOSP-B"))
    assert job.items.get().reason_code == Refusal.IDENTITY_CONFLICT


def test_a_series_uid_of_another_study_does_not_attach_there(in_alpha):
    series = generate_uid()
    first, second = generate_uid(), generate_uid()
    ingest(ct(StudyInstanceUID=first, SeriesInstanceUID=series))
    job = ingest(ct(StudyInstanceUID=second, SeriesInstanceUID=series))
    item = job.items.get()
    assert item.reason_code == Refusal.IDENTITY_CONFLICT and first in item.reason
    assert not Study.objects.filter(study_instance_uid=second).exists()
    assert Series.objects.get(series_instance_uid=series).num_instances == 1
    assert Study.objects.get(study_instance_uid=first).num_instances == 1


def test_conflicts_inside_one_batch_are_caught_too(in_alpha):
    study = generate_uid()
    job = ingest(
        ct(StudyInstanceUID=study, PatientID="P-1"), ct(StudyInstanceUID=study, PatientID="P-9")
    )
    outcomes = list(job.items.order_by("pk").values_list("outcome", "reason_code"))
    assert outcomes == [(ItemOutcome.STORED, ""), (ItemOutcome.REJECTED, Refusal.IDENTITY_CONFLICT)]
    assert Study.objects.get(study_instance_uid=study).num_instances == 1


def test_another_patient_name_is_accepted_and_flagged_by_default(in_alpha):
    study = generate_uid()
    ingest(ct(StudyInstanceUID=study, PatientID="P-1", PatientName="DOE^JOHN"))
    job = ingest(ct(StudyInstanceUID=study, PatientID="P-1", PatientName="DOE^JON"))
    assert job.items.get().outcome == ItemOutcome.STORED
    row = Study.objects.get(study_instance_uid=study)
    assert row.num_instances == 2 and "DOE^JON" in row.attribute_conflict
    assert row.patient_name == "DOE^JOHN"  # the study keeps what it was created with


def test_another_patient_name_is_refused_when_the_tenant_says_so(in_alpha):
    row = tenant_settings()
    row.patient_mismatch_policy = "refuse"
    row.save()
    study = generate_uid()
    ingest(ct(StudyInstanceUID=study, PatientID="P-1", PatientBirthDate="19700101"))
    job = ingest(ct(StudyInstanceUID=study, PatientID="P-1", PatientBirthDate="19710101"))
    item = job.items.get()
    assert item.reason_code == Refusal.PATIENT_MISMATCH and "1971-01-01" in item.reason
    assert Study.objects.get(study_instance_uid=study).num_instances == 1


# -- duplicates ----------------------------------------------------------------------------


def test_an_identical_resend_is_a_success_and_a_different_one_is_not(in_alpha):
    sop = generate_uid()
    first = ct(SOPInstanceUID=sop)
    ingest(first)
    again = ingest(first).items.get()
    assert again.outcome == ItemOutcome.DUPLICATE
    assert store_status(outcome=again.outcome) == StoreStatus.SUCCESS

    other = ingest(ct(SOPInstanceUID=sop, SeriesDescription="other bytes")).items.get()
    assert other.outcome == ItemOutcome.REJECTED and other.reason_code == Refusal.DUPLICATE_DIFFERS
    assert "keeps the first copy" in other.reason
    assert store_status(outcome=other.outcome, reason_code=other.reason_code) == (
        StoreStatus.DUPLICATE_SOP_INSTANCE
    )
    assert Path(other.quarantine_path).read_bytes() != first  # the differing copy is kept
    assert instance_path(Instance.objects.get()).read_bytes() == first


def test_replace_writes_beside_the_old_copy_and_removes_it_after_commit(in_alpha):
    row = tenant_settings()
    row.duplicate_policy = "replace"
    row.save()
    sop = generate_uid()
    ingest(ct(SOPInstanceUID=sop))
    old_path = instance_path(Instance.objects.get())
    newer = ct(SOPInstanceUID=sop, SeriesDescription="corrected")
    assert ingest(newer).items.get().outcome == ItemOutcome.REPLACED
    instance = Instance.objects.get()
    assert instance_path(instance).read_bytes() == newer
    assert not old_path.exists()
    assert Study.objects.get().num_instances == 1


def test_a_crashed_runs_orphan_is_replaced_not_indexed(in_alpha):
    data = ct()
    _job, [item] = stage(data)
    sop = pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID
    ds = pydicom.dcmread(io.BytesIO(data))
    target = (
        Path(in_alpha.storage_root)
        / "default"
        / f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{sop}.dcm"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"half written")
    ingest_items_process(item_ids=[item.pk])
    instance = Instance.objects.get()
    assert instance_path(instance).read_bytes() == data


# -- poison and recovery -------------------------------------------------------------------


def test_an_item_that_keeps_killing_its_worker_is_refused_after_three_attempts(in_alpha):
    _job, [item] = stage(ct())
    IngestItem.objects.filter(pk=item.pk).update(attempts=3)  # three runs died on it
    result = ingest_items_process(item_ids=[item.pk])[item.pk]
    assert result.outcome == ItemOutcome.REJECTED and result.reason_code == Refusal.WORKER_LOST
    item.refresh_from_db()
    assert Path(item.quarantine_path).is_file() and not Instance.objects.exists()


def test_a_batch_that_ran_before_is_processed_one_item_at_a_time(in_alpha):
    _job, items = stage(ct(), ct(), ct())
    IngestItem.objects.filter(pk=items[0].pk).update(attempts=1)
    calls = []
    from studies.ingest import engine

    real = engine._process

    def spy(candidates):  # type: ignore[no-untyped-def]
        calls.append(len(candidates))
        return real(candidates)

    with mock.patch.object(engine, "_process", spy):
        results = ingest_items_process(item_ids=[i.pk for i in items])
    assert calls == [1, 1, 1]
    assert {r.outcome for r in results.values()} == {ItemOutcome.STORED}


def test_a_job_whose_tasks_were_lost_is_sent_again(in_alpha, django_capture_on_commit_callbacks):
    job, items = stage(ct(), ct())
    IngestJob.objects.filter(pk=job.pk).update(
        status="running", progressed_at=timezone.now() - timedelta(minutes=5)
    )
    fresh, _ = stage(ct())
    IngestJob.objects.filter(pk=fresh.pk).update(status="running", progressed_at=timezone.now())
    sent = []
    delay = mock.patch("studies.tasks.ingest_batch.delay", lambda **kw: sent.append(kw))
    with delay, django_capture_on_commit_callbacks(execute=True):
        counts = ingest_jobs_recover(stall_seconds=60)
    assert counts == {"jobs": 1, "items": 2, "closed": 0}
    assert sent == [{"job_id": job.pk, "item_ids": [i.pk for i in items]}]


# -- concurrency ---------------------------------------------------------------------------


def test_two_workers_ingesting_one_study_leave_exact_counts(
    django_db_setup, django_db_blocker, monkeypatch
):
    """Two threads, each its own connection and transactions (committed for real), take
    interleaved batches of one new study: one creates it, the other waits and joins it."""
    from tenants.models import Tenant

    # The browser tests' session-wide Playwright keeps an event loop on this thread; these
    # are plain synchronous queries all the same.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    study, series = generate_uid(), generate_uid()
    with django_db_blocker.unblock():
        alpha = Tenant.objects.get(slug="alpha")
        with schema_context(alpha.schema_name):
            job, items = stage(
                *(ct(StudyInstanceUID=study, SeriesInstanceUID=series) for _ in range(40))
            )
            usage = dict(StorageMedium.objects.values_list("pk", "used_bytes"))
        halves = [[i.pk for i in items[0::2]], [i.pk for i in items[1::2]]]
        errors: list[BaseException] = []

        def work(ids: list[int]) -> None:
            try:
                with schema_context(alpha.schema_name):
                    for start in range(0, len(ids), 5):
                        ingest_items_process(item_ids=ids[start : start + 5])
            except BaseException as error:  # reported by the assertion below
                errors.append(error)
            finally:
                connections.close_all()

        threads = [threading.Thread(target=work, args=(half,)) for half in halves]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert not errors, errors
            with schema_context(alpha.schema_name):
                row = Study.objects.get(study_instance_uid=study)
                instances = Instance.objects.filter(series__series_instance_uid=series)
                assert (row.num_series, row.num_instances) == (1, 40)
                assert Series.objects.get(series_instance_uid=series).num_instances == 40
                assert instances.count() == 40
                assert row.size_bytes == sum(instances.values_list("size_bytes", flat=True))
                assert all(instance_path(i).is_file() for i in instances.select_related("medium"))
        finally:
            with schema_context(alpha.schema_name):
                files = [
                    instance_path(i)
                    for i in Instance.objects.filter(
                        series__series_instance_uid=series
                    ).select_related("medium")
                ]
                patients = list(
                    Study.objects.filter(study_instance_uid=study).values_list(
                        "patient_record", flat=True
                    )
                )
                Study.objects.filter(study_instance_uid=study).delete()
                Patient.objects.filter(pk__in=patients).delete()
                IngestJob.objects.filter(pk=job.pk).delete()
                for path in files:
                    path.unlink(missing_ok=True)
                for pk, used in usage.items():  # committed, so later tests see it otherwise
                    StorageMedium.objects.filter(pk=pk).update(used_bytes=used)


def test_a_refused_file_that_is_not_dicom_is_kept_as_its_first_kib(in_alpha):
    junk, broken = os.urandom(5000), ct()
    _job, items = stage(junk, broken[:-100])  # not DICOM; DICOM cut short
    results = ingest_items_process(item_ids=[i.pk for i in items])
    assert [results[i.pk].reason_code for i in items] == [Refusal.NOT_DICOM, Refusal.TRUNCATED]
    first, second = (IngestItem.objects.get(pk=i.pk) for i in items)
    assert Path(first.quarantine_path).read_bytes() == junk[:1024]
    assert first.sha256 == hashlib.sha256(junk).hexdigest() and first.size_bytes == 5000
    assert Path(second.quarantine_path).read_bytes() == broken[:-100]  # kept whole
