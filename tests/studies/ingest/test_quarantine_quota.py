"""Quarantine and staging count against the tenant's quota, and a tenant keeps at most
`PORTAL_QUARANTINE_BYTES_PER_DAY` of refused files per 24 hours: anyone who can send
cannot fill the disk every tenant shares with refusals."""

import io
from pathlib import Path

import pydicom
import pytest
from django_tenants.utils import schema_context
from pydicom.uid import generate_uid

from studies.ingest import ingest_item_stage, ingest_job_create
from studies.ingest.held import held
from studies.ingest.receive import ingest_item_reject
from studies.maintenance.services import quarantine_purge
from studies.models import Instance, ItemOutcome, StorageMedium
from tests.conftest import tenant_client
from tests.studies.ingest.test_ingest import bundled, ingest


def ct(uid: str | None = None) -> bytes:
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    ds.SOPInstanceUID = uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def truncated() -> bytes:
    """A DICOM file cut short: refused as truncated and kept whole in quarantine."""
    return ct()[:-100]


@pytest.fixture
def in_alpha(alpha, storage):
    with schema_context(alpha.schema_name):
        yield alpha


def set_quota(tenant, quota: int) -> None:
    tenant.quota_bytes = quota
    tenant.save(update_fields=["quota_bytes"])


def test_quarantine_counts_against_the_quota_until_it_is_purged(in_alpha):
    bad = truncated()
    set_quota(in_alpha, len(bad) + len(ct()) - 1000)
    refused = ingest([("bad.dcm", bad)]).items.get()
    assert refused.reason_code == "truncated" and refused.kept_bytes == len(bad)
    assert held().quarantine_bytes == len(bad) and held().quarantine_files == 1

    item = ingest([("good.dcm", ct())]).items.get()
    assert item.outcome == ItemOutcome.REJECTED and item.reason_code == "quota"
    assert "quarantine" in item.reason
    assert not Instance.objects.exists()

    quarantine_purge(older_than_days=0)
    assert held().quarantine_bytes == 0
    assert ingest([("good.dcm", ct())]).items.get().outcome == ItemOutcome.STORED


def test_files_waiting_in_staging_count_too(in_alpha):
    first = ct()
    set_quota(in_alpha, len(first) + len(first) // 2)
    job = ingest_job_create(source="upload")
    staged = ingest_item_stage(job=job, name="one.dcm", stream=io.BytesIO(first))
    refused = ingest_item_stage(job=job, name="two.dcm", stream=io.BytesIO(ct()))
    assert staged.outcome == ItemOutcome.PENDING and Path(staged.staged_path).is_file()
    assert refused.outcome == ItemOutcome.REJECTED and refused.reason_code == "quota"
    assert "waiting in staging" in refused.reason and "send it again" in refused.reason
    assert refused.staged_path == "" and refused.quarantine_path == ""
    # Nothing of the refused file is left in the job's staging folder.
    assert list(Path(staged.staged_path).parent.iterdir()) == [Path(staged.staged_path)]
    assert held().staging_files == 1 and held().staging_bytes == len(first)


def test_past_the_daily_allowance_refusals_are_recorded_but_not_kept(in_alpha, settings):
    first, second = truncated(), truncated()
    settings.PORTAL_QUARANTINE_BYTES_PER_DAY = len(first) + 10
    job = ingest([("a.dcm", first), ("b.dcm", second)])
    kept, dropped = job.items.order_by("pk")
    assert Path(kept.quarantine_path).read_bytes() == first and kept.kept_bytes == len(first)
    assert dropped.outcome == ItemOutcome.REJECTED and dropped.reason_code == "truncated"
    assert dropped.quarantine_path == "" and dropped.kept_bytes == 0
    assert "was not kept" in dropped.reason and len(dropped.sha256) == 64
    assert not Path(dropped.staged_path).exists()  # nor left behind in staging
    assert held().kept_today_bytes == len(first)


def test_refusals_before_processing_respect_the_allowance(in_alpha, settings):
    """The path the gateway's refusals and STOW's study mismatches take."""
    settings.PORTAL_QUARANTINE_BYTES_PER_DAY = 100
    job = ingest_job_create(source="dimse")
    item = ingest_item_stage(job=job, name="x.dcm", stream=io.BytesIO(truncated()))
    ingest_item_reject(item=item, code="truncated", reason="Cut short.")
    item.refresh_from_db()
    assert item.outcome == ItemOutcome.REJECTED and item.quarantine_path == ""
    assert "was not kept" in item.reason and not Path(item.staged_path).exists()


def test_junk_counts_only_the_kilobyte_it_keeps(in_alpha):
    item = ingest([("junk.bin", b"\x00junk" * 10_000)]).items.get()
    assert item.reason_code == "not-dicom" and item.kept_bytes == 1024
    assert held().quarantine_bytes == 1024


def test_the_storage_page_shows_what_quarantine_and_staging_hold(
    alpha, beta, storage, alpha_admin_client, make_user
):
    from tests.conftest import logged_in

    with schema_context(alpha.schema_name):
        ingest([("bad.dcm", truncated())])
    page = alpha_admin_client.get("/storage/").content.decode()
    assert "in quarantine (1 refused file)" in page
    assert "seg-quarantine" in page
    # Beta's page knows nothing of alpha's refusals, and beta's quota is untouched by them.
    beta_admin = make_user(beta, role="admin")
    other = logged_in(tenant_client(beta), beta_admin.username).get("/storage/").content.decode()
    assert "in quarantine (" not in other and "seg-quarantine" not in other
    with schema_context(beta.schema_name):
        assert held().quarantine_files == 0


def test_one_tenants_quarantine_does_not_take_another_tenants_quota(alpha, beta, storage):
    with schema_context(alpha.schema_name):
        bad = truncated()
        for index in range(3):
            ingest([(f"bad{index}.dcm", bad)])
        assert held().quarantine_bytes == 3 * len(bad)
    set_quota(beta, len(bad) + 2000)  # room for one CT, not for alpha's quarantine as well
    with schema_context(beta.schema_name):
        assert StorageMedium.objects.exists()
        assert ingest([("good.dcm", ct())]).items.get().outcome == ItemOutcome.STORED
