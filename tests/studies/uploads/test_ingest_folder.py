"""`manage.py ingest_folder`: a server folder into one job, progress, summary, refusals."""

import io
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django_tenants.utils import schema_context

from studies.models import IngestJob, IngestJobStatus, IngestSource, Instance
from tenants.services import tenant_suspend
from tests.studies.uploads.test_upload import dicom_bytes


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "import"
    (root / "study" / "series").mkdir(parents=True)
    (root / "study" / "ct.dcm").write_bytes(dicom_bytes())
    (root / "study" / "series" / "mr.dcm").write_bytes(dicom_bytes("MR_small.dcm"))
    (root / "study" / "report.pdf").write_bytes(b"%PDF-1.4 not dicom")
    (root / ".hidden.dcm").write_bytes(dicom_bytes())
    (root / ".git").mkdir()
    (root / ".git" / "x.dcm").write_bytes(dicom_bytes())
    outside = tmp_path / "outside.dcm"
    outside.write_bytes(dicom_bytes())
    (root / "link.dcm").symlink_to(outside)
    return root


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("ingest_folder", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_a_folder_is_imported_with_progress_and_a_summary(alpha, storage, folder):
    out, err = run("alpha", str(folder), "--batch", "2")
    with schema_context(alpha.schema_name):
        job = IngestJob.objects.get()
        assert (job.source, job.status) == (IngestSource.FOLDER, IngestJobStatus.DONE)
        assert (job.total, job.stored, job.rejected) == (3, 2, 1)
        assert Instance.objects.count() == 2
        assert sorted(job.items.values_list("name", flat=True)) == [
            "study/ct.dcm",
            "study/report.pdf",
            "study/series/mr.dcm",
        ]
    assert "3/3 files  100.0 %  stored 2 duplicate 0 rejected 1" in err
    assert f"Job #{job.pk} done: 3 files, stored 2, duplicate 0, rejected 1." in out
    assert "Rejected files:\n  study/report.pdf: " in out


def test_a_dry_run_lists_the_files_and_imports_nothing(alpha, storage, folder):
    out, _ = run("alpha", str(folder), "--dry-run")
    assert out.splitlines()[:3] == ["study/ct.dcm", "study/report.pdf", "study/series/mr.dcm"]
    assert "Dry run: 3 files" in out and ".hidden" not in out and "link.dcm" not in out
    with schema_context(alpha.schema_name):
        assert not IngestJob.objects.exists()


def test_unknown_and_suspended_tenants_are_refused(alpha, storage, folder, new_tenant):
    with pytest.raises(CommandError, match="There is no tenant 'nope'"):
        run("nope", str(folder))
    tenant = new_tenant().tenant
    tenant_suspend(tenant=tenant, actor="test")
    with pytest.raises(CommandError, match=f"Tenant '{tenant.slug}' is suspended"):
        run(tenant.slug, str(folder))
    with pytest.raises(CommandError, match="is not a directory"):
        run("alpha", str(folder / "missing"))
    with schema_context(alpha.schema_name):
        assert not IngestJob.objects.exists()
