"""Web upload: files, chunks from the JS, zips (with zip-slip and zip-bomb guards), the job
page and its progress, quarantine downloads, permissions and tenant isolation."""

import io
import re
import zipfile
from pathlib import Path

import pydicom
import pytest
from django.test import override_settings
from django_tenants.utils import schema_context
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from accounts.models import Role
from audit.models import AuditEvent
from portal.celery import app
from studies.models import IngestItem, IngestJob, IngestJobStatus, Instance, ItemOutcome
from tests.conftest import logged_in, tenant_client


def dicom_bytes(name: str = "CT_small.dcm") -> bytes:
    """A bundled test file with a fresh SOP Instance UID, so each call is a new instance."""
    ds = pydicom.dcmread(get_testdata_file(name, download=False))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def named(name: str, data: bytes) -> io.BytesIO:
    stream = io.BytesIO(data)
    stream.name = name
    return stream


def zipped(entries: dict[str, bytes]) -> io.BytesIO:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    out.seek(0)
    out.name = "upload.zip"
    return out


def eager_tasks(capture):
    """Celery tasks run in this process as soon as the request's transaction would commit."""
    before = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager = app.conf.task_eager_propagates = True
    yield lambda: capture(execute=True)
    app.conf.task_always_eager, app.conf.task_eager_propagates = before


@pytest.fixture
def run_tasks(django_capture_on_commit_callbacks):
    yield from eager_tasks(django_capture_on_commit_callbacks)


def job_items(tenant, job_id: int) -> dict[str, tuple[str, str]]:
    with schema_context(tenant.schema_name):
        return {
            item.name: (item.outcome, item.reason_code)
            for item in IngestItem.objects.filter(job_id=job_id)
        }


def only_job(tenant) -> IngestJob:
    with schema_context(tenant.schema_name):
        return IngestJob.objects.get()


def test_files_posted_without_js_are_stored_and_each_outcome_recorded(
    alpha, storage, alpha_admin_client, run_tasks
):
    first = dicom_bytes()
    files = [
        named("a.dcm", first),
        named("b.dcm", dicom_bytes("MR_small.dcm")),
        named("again.dcm", first),
        named("notes.txt", b"not dicom at all"),
    ]
    with run_tasks():
        response = alpha_admin_client.post("/upload/", {"files": files, "description": "ward 3"})
    job = only_job(alpha)
    assert response.status_code == 302 and response["Location"] == f"/upload/jobs/{job.pk}/"
    assert (job.status, job.total, job.stored, job.duplicates, job.rejected) == (
        IngestJobStatus.DONE,
        4,
        2,
        1,
        1,
    )
    items = job_items(alpha, job.pk)
    assert items["a.dcm"][0] == items["b.dcm"][0] == ItemOutcome.STORED
    assert items["again.dcm"][0] == ItemOutcome.DUPLICATE
    assert items["notes.txt"][0] == ItemOutcome.REJECTED
    with schema_context(alpha.schema_name):
        assert Instance.objects.count() == 2
        assert job.description == "ward 3"


def test_the_js_flow_creates_a_job_sends_chunks_and_submits(
    alpha, storage, alpha_admin_client, run_tasks
):
    created = alpha_admin_client.post("/upload/", HTTP_ACCEPT="application/json")
    assert created.status_code == 201
    links = created.json()
    assert links["files_url"] == f"/upload/{links['id']}/files/"
    for chunk in ([dicom_bytes(), dicom_bytes()], [dicom_bytes("MR_small.dcm")]):
        sent = alpha_admin_client.post(
            links["files_url"],
            {"files": [named(f"f{i}.dcm", data) for i, data in enumerate(chunk)]},
            HTTP_ACCEPT="application/json",
        )
        assert sent.status_code == 200 and sent.json() == {"staged": len(chunk), "rejected": 0}
    assert only_job(alpha).status == IngestJobStatus.RECEIVING
    with run_tasks():
        submitted = alpha_admin_client.post(links["submit_url"], HTTP_ACCEPT="application/json")
    assert submitted.status_code == 200
    job = only_job(alpha)
    assert (job.status, job.total, job.stored) == (IngestJobStatus.DONE, 3, 3)
    # A submitted job takes no more files.
    late = alpha_admin_client.post(links["files_url"], {"files": [named("x.dcm", dicom_bytes())]})
    assert late.status_code == 404
    assert only_job(alpha).total == 3


def test_a_zip_is_unpacked_and_its_junk_entries_ignored(
    alpha, storage, alpha_admin_client, run_tasks
):
    archive = zipped(
        {
            "study/ct.dcm": dicom_bytes(),
            "study/sub/mr.dcm": dicom_bytes("MR_small.dcm"),
            "study/readme.txt": b"hello",
            "__MACOSX/study/._ct.dcm": b"resource fork",
            "study/.DS_Store": b"finder",
        }
    )
    with run_tasks():
        alpha_admin_client.post("/upload/", {"files": [archive]})
    job = only_job(alpha)
    assert job_items(alpha, job.pk) == {
        "upload.zip/study/ct.dcm": (ItemOutcome.STORED, ""),
        "upload.zip/study/sub/mr.dcm": (ItemOutcome.STORED, ""),
        "upload.zip/study/readme.txt": (
            ItemOutcome.REJECTED,
            job_items(alpha, job.pk)["upload.zip/study/readme.txt"][1],
        ),
    }
    assert (job.stored, job.rejected, job.status) == (2, 1, IngestJobStatus.DONE)


def test_zip_slip_entries_are_rejected_and_nothing_lands_outside_staging(
    alpha, storage, alpha_admin_client, run_tasks
):
    storage_parent = storage.parent
    before = {p for p in storage_parent.rglob("*")}
    archive = zipped(
        {
            "../../evil.dcm": dicom_bytes(),
            "/etc/evil-absolute.dcm": dicom_bytes(),
            "ok/../../evil2.dcm": dicom_bytes(),
            "good.dcm": dicom_bytes(),
        }
    )
    with run_tasks():
        alpha_admin_client.post("/upload/", {"files": [archive]})
    job = only_job(alpha)
    with schema_context(alpha.schema_name):
        rejected = {
            i.name: (i.reason_code, i.reason)
            for i in IngestItem.objects.filter(job=job, outcome=ItemOutcome.REJECTED)
        }
    assert set(rejected) == {
        "upload.zip/../../evil.dcm",
        "upload.zip//etc/evil-absolute.dcm",
        "upload.zip/ok/../../evil2.dcm",
    }
    assert rejected["upload.zip/../../evil.dcm"] == (
        "zip-slip",
        "The entry's path contains '..' and would land outside the upload.",
    )
    assert rejected["upload.zip//etc/evil-absolute.dcm"][0] == "zip-slip"
    assert "absolute path" in rejected["upload.zip//etc/evil-absolute.dcm"][1]
    assert (job.stored, job.rejected) == (1, 3)
    created = {p for p in storage_parent.rglob("*")} - before
    assert not [p for p in created if "evil" in p.name]
    assert all(storage in p.parents for p in created)
    assert not Path("/etc/evil-absolute.dcm").exists()


def test_a_zip_bomb_is_refused_before_extraction(alpha, storage, alpha_admin_client, run_tasks):
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("ok.dcm", dicom_bytes())
        with archive.open("bomb.dcm", "w", force_zip64=True) as entry:
            zeros = bytes(1 << 20)
            for _ in range(101):
                entry.write(zeros)
    bomb.seek(0)
    bomb.name = "bomb.zip"
    with run_tasks():
        response = alpha_admin_client.post("/upload/", {"files": [bomb]}, follow=True)
    job = only_job(alpha)
    assert job.status == IngestJobStatus.FAILED
    assert "zip bomb" in job.error and "bomb.dcm" in job.error
    assert "zip bomb" in response.content.decode()
    assert (job.total, job.stored) == (0, 0)
    with schema_context(alpha.schema_name):
        assert not Instance.objects.exists()
    assert not list((storage / ".staging").glob(f"{job.pk}/*"))


@override_settings(PORTAL_MAX_UPLOAD_BYTES=50_000)
def test_a_zip_expanding_beyond_the_upload_limit_is_refused(
    alpha, storage, alpha_admin_client, run_tasks
):
    archive = zipped({f"f{i}.dcm": bytes(30_000) for i in range(3)})
    with run_tasks():
        alpha_admin_client.post("/upload/", {"files": [archive]})
    job = only_job(alpha)
    assert job.status == IngestJobStatus.FAILED
    assert "more than the upload limit of 50000 bytes" in job.error
    assert job.stored == 0


@override_settings(PORTAL_MAX_UPLOAD_BYTES=1000)
def test_a_body_over_the_limit_gets_413_and_no_job(alpha, storage, alpha_admin_client):
    response = alpha_admin_client.post("/upload/", {"files": [named("a.dcm", dicom_bytes())]})
    assert response.status_code == 413
    assert "larger than the limit of 1000 bytes" in response.json()["detail"]
    with schema_context(alpha.schema_name):
        assert not IngestJob.objects.exists()


def test_the_upload_page_lists_recent_jobs_of_this_tenant_only(
    alpha, beta, storage, alpha_admin_client, make_user, run_tasks
):
    with run_tasks():
        alpha_admin_client.post(
            "/upload/", {"files": [named("a.dcm", dicom_bytes())], "description": "alpha job"}
        )
    beta_client = logged_in(tenant_client(beta), make_user(beta).username)
    with run_tasks():
        beta_client.post(
            "/upload/", {"files": [named("b.dcm", dicom_bytes())], "description": "beta job"}
        )
    page = alpha_admin_client.get("/upload/").content.decode()
    assert "alpha job" in page and "beta job" not in page
    assert "webkitdirectory" in page and 'type="file" id="id_files" name="files" multiple' in page


def test_the_job_page_shows_progress_and_outcomes(alpha, storage, alpha_admin_client, run_tasks):
    created = alpha_admin_client.post("/upload/", HTTP_ACCEPT="application/json").json()
    alpha_admin_client.post(created["files_url"], {"files": [named("x.txt", b"nope")]})
    page = alpha_admin_client.get(created["job_url"]).content.decode()
    assert 'hx-trigger="every 1s"' in page  # still receiving: the page polls
    assert "x.txt" in page and "Pending" in page and "0 of 1 files processed (0 %)" in page
    with run_tasks():
        alpha_admin_client.post(created["submit_url"])
    partial = alpha_admin_client.get(f"/upload/jobs/{created['id']}/progress/").content.decode()
    assert "hx-trigger" not in partial  # over: polling stops
    assert "1 of 1 files processed (100 %)" in partial and "Failed" in partial
    assert "show every file" in partial
    page = alpha_admin_client.get(created["job_url"]).content.decode()
    assert "Rejected" in page and "Every file was rejected" in page


def test_the_job_pages_poll_brings_the_files_table_along(
    alpha, storage, alpha_admin_client, run_tasks
):
    """What htmx fetches every second is progress and files together, so the table cannot
    say "Pending" under a progress bar that says "Done"."""
    created = alpha_admin_client.post("/upload/", HTTP_ACCEPT="application/json").json()
    alpha_admin_client.post(created["files_url"], {"files": [named("x.txt", b"nope")]})
    polled = alpha_admin_client.get(created["job_url"], HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in polled and 'id="ingest-live"' in polled
    assert 'hx-trigger="every 1s"' in polled and "Pending" in polled and "x.txt" in polled
    assert polled.count("hx-trigger") == 1  # one poll for the region, not one per part
    with run_tasks():
        alpha_admin_client.post(created["submit_url"])
    polled = alpha_admin_client.get(created["job_url"], HTTP_HX_REQUEST="true").content.decode()
    assert "hx-trigger" not in polled and "Pending" not in polled and "Rejected" in polled


def test_the_job_page_is_paginated(alpha, storage, alpha_admin_client):
    created = alpha_admin_client.post("/upload/", HTTP_ACCEPT="application/json").json()
    alpha_admin_client.post(
        created["files_url"], {"files": [named(f"n{i:02}.txt", b"x") for i in range(55)]}
    )
    first = alpha_admin_client.get(created["job_url"]).content.decode()
    second = alpha_admin_client.get(created["job_url"] + "?page=2").content.decode()
    assert "n00.txt" in first and "n54.txt" not in first
    assert "n54.txt" in second and "Page 2 of 2" in second


def test_quarantined_files_download_for_admins_only(
    alpha, storage, alpha_admin_client, make_user, run_tasks
):
    with run_tasks():
        alpha_admin_client.post("/upload/", {"files": [named("bad.dcm", b"garbage bytes")]})
    job = only_job(alpha)
    with schema_context(alpha.schema_name):
        item = IngestItem.objects.get(job=job)
    assert item.quarantine_path
    url = f"/upload/jobs/{job.pk}/items/{item.pk}/quarantine"
    operator = logged_in(tenant_client(alpha), make_user(alpha, role=Role.OPERATOR).username)
    assert operator.get(url).status_code == 403
    assert (
        "Download from quarantine" not in operator.get(f"/upload/jobs/{job.pk}/").content.decode()
    )
    response = alpha_admin_client.get(url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"garbage bytes"
    assert "attachment" in response["Content-Disposition"]
    with schema_context(alpha.schema_name):
        assert AuditEvent.objects.filter(action="ingest.quarantine_download").count() == 1


def test_roles_without_ingest_cannot_upload(alpha, storage, make_user):
    viewer = logged_in(tenant_client(alpha), make_user(alpha, role=Role.VIEWER).username)
    assert viewer.post("/upload/", {"files": [named("a.dcm", dicom_bytes())]}).status_code == 403
    assert viewer.get("/upload/").status_code == 403
    anonymous = tenant_client(alpha).post("/upload/", {"files": [named("a.dcm", dicom_bytes())]})
    assert anonymous.status_code == 302 and "/account/login/" in anonymous["Location"]
    with schema_context(alpha.schema_name):
        assert not IngestJob.objects.exists()


def test_another_tenant_cannot_see_or_feed_alphas_jobs(
    alpha, beta, storage, alpha_admin_client, make_user, run_tasks
):
    with run_tasks():
        alpha_admin_client.post("/upload/", {"files": [named("bad.dcm", b"garbage")]})
    job = only_job(alpha)
    with schema_context(alpha.schema_name):
        item = IngestItem.objects.get(job=job)
    beta_admin = logged_in(tenant_client(beta), make_user(beta).username)
    for url in (
        f"/upload/jobs/{job.pk}/",
        f"/upload/jobs/{job.pk}/progress/",
        f"/upload/jobs/{job.pk}/items/{item.pk}/quarantine",
    ):
        assert beta_admin.get(url).status_code == 404, url
    assert beta_admin.post(f"/upload/{job.pk}/files/", {"files": []}).status_code == 404
    assert only_job(alpha).total == 1


def test_uploads_still_need_the_csrf_token(alpha, storage, alpha_admin_client, run_tasks):
    client = alpha_admin_client
    client.handler.enforce_csrf_checks = True
    response = client.post("/upload/", {"files": [named("a.dcm", dicom_bytes())]})
    assert response.status_code == 403
    with schema_context(alpha.schema_name):
        assert not IngestJob.objects.exists()
    page = client.get("/upload/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    created = client.post("/upload/", HTTP_ACCEPT="application/json", HTTP_X_CSRFTOKEN=token)
    assert created.status_code == 201
    sent = client.post(
        created.json()["files_url"],
        {"files": [named("a.dcm", dicom_bytes())]},
        HTTP_X_CSRFTOKEN=token,
    )
    assert sent.status_code == 200 and only_job(alpha).total == 1
