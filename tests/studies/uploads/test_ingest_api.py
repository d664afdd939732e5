"""/api/v1/ingest/: multipart and raw application/dicom uploads, job status, token scopes,
size limits and tenant isolation."""

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import TemporaryUploadedFile
from django.test import override_settings
from django_tenants.utils import schema_context

from accounts.models import Role, TokenScope
from accounts.services import api_token_create
from studies.models import IngestJob, IngestJobStatus, Instance, ItemOutcome
from tests.conftest import tenant_client
from tests.studies.hostile import STORED, corpus
from tests.studies.uploads.test_upload import dicom_bytes, eager_tasks, named, zipped


@pytest.fixture
def run_tasks(django_capture_on_commit_callbacks):
    yield from eager_tasks(django_capture_on_commit_callbacks)


@pytest.fixture
def token_for(make_user):
    def make(tenant, role: str = Role.OPERATOR, scope: str = TokenScope.STORE) -> str:
        user = make_user(tenant, role=role)
        with schema_context(tenant.schema_name):
            return api_token_create(user=user, name="scanner", scope=scope)[1]

    return make


@pytest.fixture
def store_api(alpha, token_for):
    return tenant_client(alpha, HTTP_AUTHORIZATION=f"Bearer {token_for(alpha)}")


def no_jobs(tenant) -> bool:
    with schema_context(tenant.schema_name):
        return not IngestJob.objects.exists()


def test_multipart_files_and_zips_with_a_store_token(alpha, storage, store_api, run_tasks):
    with run_tasks():
        response = store_api.post(
            "/api/v1/ingest/",
            {
                "files": [named("ct.dcm", dicom_bytes()), named("junk.bin", b"junk")],
                "more": [zipped({"mr.dcm": dicom_bytes("MR_small.dcm")})],
            },
        )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["source"] == "rest" and body["total"] == 3
    assert body["url"].endswith(f"/api/v1/ingest/{body['id']}/")
    assert body["page_url"].endswith(f"/upload/jobs/{body['id']}/")
    status = store_api.get(f"/api/v1/ingest/{body['id']}/").json()
    assert (status["status"], status["stored"], status["rejected"], status["percent"]) == (
        IngestJobStatus.DONE,
        2,
        1,
        100,
    )
    items = store_api.get(f"/api/v1/ingest/{body['id']}/items/").json()
    outcomes = {i["name"]: i["outcome"] for i in items["results"]}
    assert outcomes == {
        "ct.dcm": ItemOutcome.STORED,
        "junk.bin": ItemOutcome.REJECTED,
        "upload.zip/mr.dcm": ItemOutcome.STORED,
    }
    rejected = store_api.get(f"/api/v1/ingest/{body['id']}/items/?outcome=rejected").json()
    assert [i["name"] for i in rejected["results"]] == ["junk.bin"]
    assert rejected["results"][0]["reason"]


def test_uploaded_files_are_written_once_straight_into_staging(
    alpha, storage, store_api, monkeypatch
):
    """No temp file of Django's: each file lands in the tenant's staging area as it arrives,
    hashed there, and is renamed into its job; a zip, extracted, leaves nothing behind."""

    def no_temp_files(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("an upload went through Django's temp directory")

    monkeypatch.setattr(TemporaryUploadedFile, "__init__", no_temp_files)
    ct = dicom_bytes()
    response = store_api.post(
        "/api/v1/ingest/",
        {"files": [named("ct.dcm", ct), zipped({"mr.dcm": dicom_bytes("MR_small.dcm")})]},
    )
    assert response.status_code == 202, response.content
    with schema_context(alpha.schema_name):
        items = {i.name: i for i in IngestJob.objects.get(pk=response.json()["id"]).items.all()}
    assert set(items) == {"ct.dcm", "upload.zip/mr.dcm"}
    staged = Path(items["ct.dcm"].staged_path)
    assert staged.read_bytes() == ct and items["ct.dcm"].sha256 == hashlib.sha256(ct).hexdigest()
    assert list((storage / ".staging" / "incoming").iterdir()) == []  # the zip is gone too


def test_one_raw_application_dicom_body(alpha, storage, store_api, run_tasks):
    data = dicom_bytes()
    with run_tasks():
        response = store_api.post(
            "/api/v1/ingest/?name=scan.dcm", data=data, content_type="application/dicom"
        )
    assert response.status_code == 202, response.content
    job_id = response.json()["id"]
    with schema_context(alpha.schema_name):
        job = IngestJob.objects.get(pk=job_id)
        assert (job.status, job.stored) == (IngestJobStatus.DONE, 1)
        assert job.items.get().name == "scan.dcm"
        assert Instance.objects.get().size_bytes == len(data)


def test_an_empty_request_is_refused_with_a_reason(alpha, storage, store_api):
    response = store_api.post("/api/v1/ingest/", {})
    assert response.status_code == 400
    assert response.json()["files"] == ["Send at least one file."]
    assert no_jobs(alpha)


@override_settings(PORTAL_MAX_UPLOAD_BYTES=1000)
def test_a_body_over_the_limit_gets_413(alpha, storage, store_api):
    response = store_api.post(
        "/api/v1/ingest/", data=dicom_bytes(), content_type="application/dicom"
    )
    assert response.status_code == 413
    assert "over the limit of 1000 bytes" in response.json()["detail"]
    assert no_jobs(alpha)


def test_a_zip_bomb_fails_the_job_with_422(alpha, storage, store_api, run_tasks):
    bomb = io.BytesIO()
    with (
        zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("bomb.dcm", "w", force_zip64=True) as entry,
    ):
        for _ in range(101):
            entry.write(bytes(1 << 20))
    bomb.seek(0)
    bomb.name = "b.zip"
    with run_tasks():
        response = store_api.post("/api/v1/ingest/", {"files": [bomb]})
    assert response.status_code == 422
    assert response.json()["status"] == IngestJobStatus.FAILED
    assert "zip bomb" in response.json()["error"]


@pytest.mark.parametrize(
    ("role", "scope"), [(Role.ADMIN, TokenScope.READ), (Role.VIEWER, TokenScope.FULL)]
)
def test_tokens_without_ingest_are_refused(alpha, storage, token_for, role, scope):
    client = tenant_client(alpha, HTTP_AUTHORIZATION=f"Bearer {token_for(alpha, role, scope)}")
    response = client.post("/api/v1/ingest/", {"files": [named("a.dcm", dicom_bytes())]})
    assert response.status_code == 403
    assert no_jobs(alpha)


def test_anonymous_and_other_tenants_tokens_are_unauthorised(alpha, beta, storage, token_for):
    anonymous = tenant_client(alpha).post(
        "/api/v1/ingest/", {"files": [named("a.dcm", dicom_bytes())]}
    )
    assert anonymous.status_code == 401
    beta_token = token_for(beta, Role.ADMIN, TokenScope.FULL)
    foreign = tenant_client(alpha, HTTP_AUTHORIZATION=f"Bearer {beta_token}").post(
        "/api/v1/ingest/", {"files": [named("a.dcm", dicom_bytes())]}
    )
    assert foreign.status_code == 401
    assert no_jobs(alpha) and no_jobs(beta)


def test_jobs_of_another_tenant_are_not_found(
    alpha, beta, storage, store_api, token_for, run_tasks
):
    with run_tasks():
        job_id = store_api.post(
            "/api/v1/ingest/", {"files": [named("a.dcm", dicom_bytes())]}
        ).json()["id"]
    beta_api = tenant_client(beta, HTTP_AUTHORIZATION=f"Bearer {token_for(beta)}")
    assert beta_api.get(f"/api/v1/ingest/{job_id}/").status_code == 404
    assert beta_api.get(f"/api/v1/ingest/{job_id}/items/").status_code == 404
    assert store_api.get(f"/api/v1/ingest/{job_id}/").status_code == 200


def test_the_job_list_shows_this_tenants_jobs_newest_first(
    alpha, beta, storage, store_api, token_for, run_tasks
):
    beta_api = tenant_client(beta, HTTP_AUTHORIZATION=f"Bearer {token_for(beta)}")
    with run_tasks():
        beta_api.post("/api/v1/ingest/?description=beta", {"files": [named("b.dcm", b"x")]})
    with run_tasks():
        for name in ("one", "two"):
            store_api.post(f"/api/v1/ingest/?description={name}", {"files": [named("a", b"x")]})
    listed = store_api.get("/api/v1/ingest/").json()
    assert [job["description"] for job in listed["results"]] == ["two", "one"]
    failed = store_api.get("/api/v1/ingest/?status=failed").json()
    assert failed["count"] == 2


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns on the corpus's values
def test_the_hostile_corpus_is_refused_kind_by_kind_and_the_valid_kinds_stored(
    alpha, storage, store_api, run_tasks, tmp_path
):
    """Every kind of tests/studies/hostile.py in one request: each refused item has the
    kind's reason code and a sentence, each valid kind is indexed, nothing refused is."""
    specimens = corpus(tmp_path)
    with run_tasks():
        response = store_api.post(
            "/api/v1/ingest/",
            {"files": [named(s.path.name, s.path.read_bytes()) for s in specimens]},
        )
    assert response.status_code == 202, response.content
    with schema_context(alpha.schema_name):
        items = {i.name: i for i in IngestJob.objects.get(pk=response.json()["id"]).items.all()}
        stored = set(Instance.objects.values_list("sop_instance_uid", flat=True))
    wrong = {}
    for specimen in specimens:
        item = items[specimen.path.name]
        got = "" if item.outcome == ItemOutcome.STORED else item.reason_code
        if got != specimen.expected or (got and not item.reason):
            wrong[specimen.kind] = (specimen.expected, got, item.reason)
    assert wrong == {}
    assert stored == {s.sop_instance_uid for s in specimens if s.expected == STORED}


def test_a_store_token_sees_only_the_jobs_it_sent(alpha, beta, storage, token_for, run_tasks):
    """A modality's upload credential reads back its own jobs, not the whole tenant's traffic:
    another store token of the same tenant, a DIMSE job or a browser upload stay hidden from it,
    while a full token of an admin still sees them all."""
    first = tenant_client(alpha, HTTP_AUTHORIZATION=f"Bearer {token_for(alpha)}")
    second = tenant_client(alpha, HTTP_AUTHORIZATION=f"Bearer {token_for(alpha)}")
    admin = tenant_client(
        alpha, HTTP_AUTHORIZATION=f"Bearer {token_for(alpha, Role.ADMIN, TokenScope.FULL)}"
    )
    with run_tasks():
        mine = first.post("/api/v1/ingest/?description=mine", {"files": [named("a", b"x")]})
        theirs = second.post("/api/v1/ingest/?description=theirs", {"files": [named("b", b"x")]})
    mine_id, theirs_id = mine.json()["id"], theirs.json()["id"]

    assert [j["id"] for j in first.get("/api/v1/ingest/").json()["results"]] == [mine_id]
    assert [j["id"] for j in second.get("/api/v1/ingest/").json()["results"]] == [theirs_id]
    assert first.get(f"/api/v1/ingest/{theirs_id}/").status_code == 404
    assert first.get(f"/api/v1/ingest/{theirs_id}/items/").status_code == 404
    assert first.get(f"/api/v1/ingest/{mine_id}/items/").status_code == 200
    assert {j["id"] for j in admin.get("/api/v1/ingest/").json()["results"]} == {
        mine_id,
        theirs_id,
    }
    beta_store = tenant_client(beta, HTTP_AUTHORIZATION=f"Bearer {token_for(beta)}")
    assert beta_store.get("/api/v1/ingest/").json()["count"] == 0
    assert beta_store.get(f"/api/v1/ingest/{mine_id}/").status_code == 404
