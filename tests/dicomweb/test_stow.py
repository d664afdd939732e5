"""STOW-RS: real files stored byte-identical and listed with their URLs, failures with their
PS3.18 reasons, statuses 200/202/409/400/406/411/413/415, study-URL refusals, who may store,
tenant isolation, one audit row per request, and nothing half-stored."""

import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import pydicom
import pytest
from django.test import Client
from django_tenants.utils import schema_context
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from accounts.models import Role, TokenScope
from accounts.services import api_token_create
from audit.models import AuditEvent
from studies.ingest.outcomes import store_status
from studies.models import (
    IngestItem,
    IngestJob,
    IngestJobStatus,
    IngestSource,
    Instance,
    ItemOutcome,
)
from studies.storage import instance_path, staging_dir
from tenants.models import Tenant
from tests.conftest import logged_in, tenant_client
from tests.studies.conftest import storage  # noqa: F401
from tests.studies.hostile import STORED, corpus

BOUNDARY = "stow-test-boundary-1c9e"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
RETRIEVE_URL, FAILURE_REASON = "00081190", "00081197"
FAILED, REFERENCED = "00081198", "00081199"
SOP_CLASS, SOP_INSTANCE = "00081150", "00081155"


def dicom(name: str = "CT_small.dcm", *, study: str | None = None, sop: str | None = None):
    """A bundled file as a new instance (fresh SOP Instance UID, or `sop`), optionally moved
    into `study`; returns the bytes and the dataset's UIDs."""
    ds = pydicom.dcmread(get_testdata_file(name, download=False))
    ds.SOPInstanceUID = sop or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if study is not None:
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = generate_uid()
        ds.PatientID = "STOW-1"  # one patient's study, whichever file it started from
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue(), ds


def body(*parts: bytes | tuple[str, bytes]) -> bytes:
    out = io.BytesIO()
    for part in parts:
        media, data = part if isinstance(part, tuple) else ("application/dicom", part)
        out.write(f"--{BOUNDARY}\r\nContent-Type: {media}\r\n\r\n".encode())
        out.write(data + b"\r\n")
    out.write(f"--{BOUNDARY}--\r\n".encode())
    return out.getvalue()


def stow(client: Client, payload: bytes, *, study: str | None = None, **kwargs):
    path = "/dicom-web/studies" + (f"/{study}" if study else "")
    content_type = kwargs.pop("content_type", CONTENT_TYPE)
    return client.post(path, data=payload, content_type=content_type, **kwargs)


def token_client(tenant: Tenant, user, scope: str = TokenScope.STORE) -> Client:
    with schema_context(tenant.schema_name):
        _, raw = api_token_create(user=user, name="scanner", scope=scope)
    return tenant_client(tenant, HTTP_AUTHORIZATION=f"Bearer {raw}")


def sha(data: bytes | Path) -> str:
    return hashlib.sha256(data.read_bytes() if isinstance(data, Path) else data).hexdigest()


def value(element: dict) -> object:
    return element["Value"][0]


def failures(answer) -> list[dict]:
    return json.loads(answer.content).get(FAILED, {}).get("Value", [])


def references(answer) -> list[dict]:
    return json.loads(answer.content).get(REFERENCED, {}).get("Value", [])


def instances(tenant: Tenant) -> dict[str, Instance]:
    with schema_context(tenant.schema_name):
        return {
            i.sop_instance_uid: i
            for i in Instance.objects.select_related("medium", "series__study")
        }


def stow_jobs(tenant: Tenant) -> list[IngestJob]:
    with schema_context(tenant.schema_name):
        return list(IngestJob.objects.filter(source=IngestSource.STOW).order_by("pk"))


def items_of(tenant: Tenant, job: IngestJob) -> list[IngestItem]:
    with schema_context(tenant.schema_name):
        return list(IngestItem.objects.filter(job=job).order_by("pk"))


def store_audits(tenant: Tenant) -> list[AuditEvent]:
    with schema_context(tenant.schema_name):
        return list(AuditEvent.objects.filter(action="dicomweb.store").order_by("pk"))


@pytest.fixture
def operator(make_user, alpha, storage):  # noqa: F811 - the imported fixture
    return make_user(alpha, role=Role.OPERATOR)


@pytest.fixture
def store_client(alpha, operator) -> Client:
    return token_client(alpha, operator)


# -- storing ----------------------------------------------------------------------------------


def test_instances_are_stored_byte_identical_indexed_and_listed_with_their_urls(
    alpha, store_client
):
    files = [dicom("CT_small.dcm"), dicom("MR_small.dcm"), dicom("rtdose.dcm")]
    answer = stow(store_client, body(*(data for data, _ in files)))

    assert answer.status_code == 200, answer.content
    assert answer["Content-Type"] == "application/dicom+json"
    assert "Warning" not in answer
    stored = instances(alpha)
    listed = {value(r[SOP_INSTANCE]): r for r in references(answer)}
    assert set(listed) == {ds.SOPInstanceUID for _, ds in files} == set(stored)
    with schema_context(alpha.schema_name):
        for data, ds in files:
            instance = stored[ds.SOPInstanceUID]
            assert sha(instance_path(instance)) == sha(data) == instance.sha256
            assert instance.series.study.study_instance_uid == ds.StudyInstanceUID
            assert value(listed[ds.SOPInstanceUID][SOP_CLASS]) == ds.SOPClassUID
            assert value(listed[ds.SOPInstanceUID][RETRIEVE_URL]) == (
                f"http://alpha.localhost/dicom-web/studies/{ds.StudyInstanceUID}"
                f"/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
            )
    # Three studies: the study-level Retrieve URL is present (Type 2) but empty.
    assert json.loads(answer.content)[RETRIEVE_URL] == {"vr": "UR"}
    (job,) = stow_jobs(alpha)
    assert (job.status, job.total, job.stored, job.rejected) == (IngestJobStatus.DONE, 3, 3, 0)


def test_one_study_gets_its_retrieve_url_and_json_accept_headers_are_honoured(alpha, store_client):
    study = generate_uid()
    for accept in ["application/dicom+json", "application/json", "*/*", "text/html, */*;q=0.1"]:
        files = [dicom("CT_small.dcm", study=study), dicom("MR_small.dcm", study=study)]
        answer = stow(store_client, body(*(d for d, _ in files)), HTTP_ACCEPT=accept)
        assert answer.status_code == 200, (accept, answer.content)
        assert value(json.loads(answer.content)[RETRIEVE_URL]) == (
            f"http://alpha.localhost/dicom-web/studies/{study}"
        )


def test_good_and_corrupt_parts_give_202_with_each_failure_and_nothing_half_written(
    alpha, store_client
):
    good, good_ds = dicom("MR_small.dcm")
    truncated, truncated_ds = dicom("CT_small.dcm")
    truncated = truncated[: len(truncated) // 2]
    not_dicom = b"this is not a DICOM file at all " * 10
    answer = stow(store_client, body(good, truncated, not_dicom, ("text/plain", b"a note")))

    assert answer.status_code == 202, answer.content
    assert [value(r[SOP_INSTANCE]) for r in references(answer)] == [good_ds.SOPInstanceUID]
    failed = failures(answer)
    assert [value(f[FAILURE_REASON]) for f in failed] == [0xC000, 0xC000]
    # The truncated file's UIDs are readable, so the client learns which instance failed.
    assert value(failed[0][SOP_INSTANCE]) == truncated_ds.SOPInstanceUID
    assert value(failed[0][SOP_CLASS]) == truncated_ds.SOPClassUID
    assert SOP_INSTANCE not in failed[1]
    # The text part is no instance: not in the sequence, but in the warning.
    warning = answer["Warning"]
    assert warning.startswith('299 portal "3 of 4 parts were not stored')
    assert "not application/dicom" in warning and "truncated" in warning

    assert set(instances(alpha)) == {good_ds.SOPInstanceUID}
    (job,) = stow_jobs(alpha)
    items = items_of(alpha, job)
    assert [i.outcome for i in items] == ["stored", "rejected", "rejected", "rejected"]
    assert [i.reason_code for i in items[1:]] == [
        "truncated",
        "not-dicom",
        "unsupported-media-type",
    ]
    for item in items[1:3]:
        assert item.reason and Path(item.quarantine_path).is_file()
    assert Path(items[1].quarantine_path).read_bytes() == truncated
    with schema_context(alpha.schema_name):
        assert not staging_dir(job.pk).exists()


def test_nothing_stored_is_a_409_with_every_failure(alpha, store_client):
    answer = stow(store_client, body(b"not dicom", b"\x00" * 200))
    assert answer.status_code == 409, answer.content
    assert len(failures(answer)) == 2 and not references(answer)
    assert "Warning" in answer
    assert instances(alpha) == {}
    (job,) = stow_jobs(alpha)
    assert (job.status, job.rejected) == (IngestJobStatus.FAILED, 2)


def test_an_unstorable_sop_class_is_0122_and_a_part_over_the_instance_limit_a700(
    alpha, store_client, settings
):
    small, small_ds = dicom("MR_small.dcm")
    large, _ = dicom("CT_small.dcm")
    settings.PORTAL_MAX_INSTANCE_BYTES = (len(small) + len(large)) // 2
    unstorable = pydicom.dcmread(io.BytesIO(small))
    unstorable.SOPClassUID = "1.2.840.10008.1.1"  # Verification: not a storage SOP class
    unstorable.SOPInstanceUID = generate_uid()
    out = io.BytesIO()
    unstorable.save_as(out, enforce_file_format=True)

    answer = stow(store_client, body(small, large, out.getvalue()))
    assert answer.status_code == 202, answer.content
    assert [value(r[SOP_INSTANCE]) for r in references(answer)] == [small_ds.SOPInstanceUID]
    assert [value(f[FAILURE_REASON]) for f in failures(answer)] == [0xA700, 0x0122]
    assert value(failures(answer)[1][SOP_INSTANCE]) == unstorable.SOPInstanceUID


def test_a_duplicate_kept_as_the_first_copy_is_a_success(alpha, store_client):
    data, ds = dicom("CT_small.dcm")
    assert stow(store_client, body(data)).status_code == 200
    again = stow(store_client, body(data))
    assert again.status_code == 200, again.content
    assert [value(r[SOP_INSTANCE]) for r in references(again)] == [ds.SOPInstanceUID]
    assert "kept the first copy" in again["Warning"]
    assert list(instances(alpha)) == [ds.SOPInstanceUID]


def test_an_operator_session_may_store(alpha, operator):
    client = logged_in(tenant_client(alpha), operator.username)
    data, ds = dicom("MR_small.dcm")
    answer = stow(client, body(data))
    assert answer.status_code == 200, answer.content
    assert ds.SOPInstanceUID in instances(alpha)
    (job,) = stow_jobs(alpha)
    assert job.created_by_id == operator.pk


# -- the study in the URL ---------------------------------------------------------------------


def test_instances_of_another_study_than_the_url_names_are_refused(alpha, store_client):
    study, other = generate_uid(), generate_uid()
    mine = [dicom("CT_small.dcm", study=study), dicom("MR_small.dcm", study=study)]
    stranger, stranger_ds = dicom("MR_small.dcm", study=other)
    answer = stow(store_client, body(mine[0][0], stranger, mine[1][0]), study=study)

    assert answer.status_code == 202, answer.content
    assert value(json.loads(answer.content)[RETRIEVE_URL]) == (
        f"http://alpha.localhost/dicom-web/studies/{study}"
    )
    assert {value(r[SOP_INSTANCE]) for r in references(answer)} == {
        ds.SOPInstanceUID for _, ds in mine
    }
    (failed,) = failures(answer)
    assert value(failed[FAILURE_REASON]) == 0xC409
    assert value(failed[SOP_INSTANCE]) == stranger_ds.SOPInstanceUID
    stored = instances(alpha)
    assert stranger_ds.SOPInstanceUID not in stored and len(stored) == 2
    with schema_context(alpha.schema_name):
        item = IngestItem.objects.get(reason_code="study-mismatch")
    assert other in item.reason and Path(item.quarantine_path).read_bytes() == stranger


def test_only_instances_of_another_study_is_a_409(alpha, store_client):
    data, _ = dicom("CT_small.dcm", study=generate_uid())
    answer = stow(store_client, body(data), study=generate_uid())
    assert answer.status_code == 409, answer.content
    assert value(failures(answer)[0][FAILURE_REASON]) == 0xC409
    assert json.loads(answer.content)[RETRIEVE_URL] == {"vr": "UR"}
    assert instances(alpha) == {}


def test_a_malformed_study_uid_in_the_url_is_a_400(alpha, store_client):
    data, _ = dicom()
    answer = stow(store_client, body(data), study="1.2.abc")
    assert answer.status_code == 400
    assert "not a valid UID" in json.loads(answer.content)["detail"]
    assert stow_jobs(alpha) == []


# -- refused requests -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "reason"),
    [
        (
            f'multipart/related; type="application/dicom+json"; boundary={BOUNDARY}',
            "not supported; send application/dicom parts",
        ),
        (
            f"multipart/related; type=application/dicom+xml; boundary={BOUNDARY}",
            "not supported; send application/dicom parts",
        ),
        (f"multipart/related; type=image/jpeg; boundary={BOUNDARY}", "image/jpeg"),
        ("application/dicom", "multipart/related"),
        (f"multipart/form-data; boundary={BOUNDARY}", "multipart/related"),
    ],
)
def test_other_media_types_are_415(alpha, store_client, content_type, reason):
    data, _ = dicom()
    answer = stow(store_client, body(data), content_type=content_type)
    assert answer.status_code == 415
    assert reason in json.loads(answer.content)["detail"]
    assert answer["Warning"].startswith("299 ")
    assert stow_jobs(alpha) == [] and instances(alpha) == {}


def test_a_missing_type_parameter_is_accepted(alpha, store_client):
    data, ds = dicom()
    answer = stow(store_client, body(data), content_type=f"multipart/related; boundary={BOUNDARY}")
    assert answer.status_code == 200, answer.content
    assert ds.SOPInstanceUID in instances(alpha)


def test_an_xml_response_is_406_before_anything_is_read(alpha, store_client):
    data, _ = dicom()
    answer = stow(store_client, body(data), HTTP_ACCEPT="application/dicom+xml")
    assert answer.status_code == 406
    assert stow_jobs(alpha) == [] and instances(alpha) == {}


def test_a_body_over_the_upload_limit_is_413_before_anything_is_read(alpha, store_client, settings):
    data, _ = dicom()
    payload = body(data)
    settings.PORTAL_MAX_UPLOAD_BYTES = len(payload) - 1
    answer = stow(store_client, payload)
    assert answer.status_code == 413
    assert str(len(payload)) in json.loads(answer.content)["detail"]
    assert stow_jobs(alpha) == [] and instances(alpha) == {}
    (audit,) = store_audits(alpha)
    assert (audit.outcome, audit.details["status"]) == ("failure", 413)


def test_a_body_without_a_length_is_411(alpha, store_client):
    data, _ = dicom()
    answer = stow(store_client, body(data), CONTENT_LENGTH="")
    assert answer.status_code == 411
    assert stow_jobs(alpha) == []


def break_last_header(whole: bytes) -> bytes:
    at = whole.rfind(b"Content-Type")
    return whole[:at] + b"Content Type" + whole[at + len(b"Content-Type") :]


@pytest.mark.parametrize(
    ("cut", "reason"),
    [
        (lambda whole: whole[: -len(f"--{BOUNDARY}--\r\n")], "closing --"),
        (lambda whole: whole[: len(whole) - 5000], "closing --"),
        (lambda whole: break_last_header(whole), "malformed header line"),
    ],
)
def test_a_malformed_body_is_400_and_stores_nothing_of_it(alpha, store_client, cut, reason):
    files = [dicom("MR_small.dcm"), dicom("CT_small.dcm")]
    answer = stow(store_client, cut(body(*(d for d, _ in files))))
    assert answer.status_code == 400, answer.content
    detail = json.loads(answer.content)["detail"]
    assert reason in detail and "Nothing was stored" in detail
    assert instances(alpha) == {}
    (job,) = stow_jobs(alpha)
    assert job.status == IngestJobStatus.FAILED and job.total == job.rejected
    assert {i.outcome for i in items_of(alpha, job)} == {"rejected"}
    with schema_context(alpha.schema_name):
        assert not staging_dir(job.pk).exists()
        assert not (Path(alpha.storage_root) / ".quarantine" / str(job.pk)).exists()


@pytest.mark.parametrize(
    "content_type",
    ['multipart/related; type="application/dicom"', "multipart/related; boundary=bad\x7fchar"],
)
def test_no_usable_boundary_is_400_and_opens_no_job(alpha, store_client, content_type):
    data, _ = dicom()
    answer = stow(store_client, body(data), content_type=content_type)
    assert answer.status_code == 400
    assert "boundary" in json.loads(answer.content)["detail"]
    assert stow_jobs(alpha) == []


def test_a_body_that_is_not_multipart_with_that_boundary_is_400(alpha, store_client):
    data, _ = dicom()
    answer = stow(store_client, data)
    assert answer.status_code == 400
    assert "no boundary line" in json.loads(answer.content)["detail"]
    assert stow_jobs(alpha) == [] and instances(alpha) == {}


# -- who may store ----------------------------------------------------------------------------


def test_a_read_token_and_a_viewer_are_403_and_nothing_is_stored(alpha, make_user, storage):  # noqa: F811
    viewer = make_user(alpha, role=Role.VIEWER)
    admin = make_user(alpha, role=Role.ADMIN)
    data, _ = dicom()
    for client in [
        token_client(alpha, admin, TokenScope.READ),
        logged_in(tenant_client(alpha), viewer.username),
    ]:
        answer = stow(client, body(data))
        assert answer.status_code == 403
    assert stow_jobs(alpha) == [] and instances(alpha) == {}


def test_full_tokens_and_admins_may_store(alpha, make_user, storage):  # noqa: F811
    admin = make_user(alpha, role=Role.ADMIN)
    data, ds = dicom()
    assert stow(token_client(alpha, admin, TokenScope.FULL), body(data)).status_code == 200
    assert ds.SOPInstanceUID in instances(alpha)


def test_a_stow_job_is_listed_only_to_the_store_token_that_sent_it(alpha, make_user, storage):  # noqa: F811
    sender, other = make_user(alpha, role=Role.OPERATOR), make_user(alpha, role=Role.OPERATOR)
    scanner, neighbour = token_client(alpha, sender), token_client(alpha, other)
    data, _ = dicom()
    assert stow(scanner, body(data)).status_code == 200
    (job,) = stow_jobs(alpha)
    assert [j["id"] for j in scanner.get("/api/v1/ingest/").json()["results"]] == [job.pk]
    assert neighbour.get("/api/v1/ingest/").json()["count"] == 0
    assert neighbour.get(f"/api/v1/ingest/{job.pk}/items/").status_code == 404


def test_betas_token_is_unknown_on_alphas_site(alpha, beta, make_user, storage):  # noqa: F811
    intruder = make_user(beta, role=Role.ADMIN)
    client = token_client(beta, intruder)
    stolen = client.defaults["HTTP_AUTHORIZATION"]
    data, _ = dicom()
    answer = stow(tenant_client(alpha, HTTP_AUTHORIZATION=stolen), body(data))
    assert answer.status_code == 401
    assert stow_jobs(alpha) == [] and stow_jobs(beta) == []
    assert instances(alpha) == {} and instances(beta) == {}


def test_the_same_file_in_two_tenants_makes_two_independent_copies(
    alpha,
    beta,
    make_user,
    storage,  # noqa: F811
):
    data, ds = dicom("CT_small.dcm")
    for tenant in (alpha, beta):
        client = token_client(tenant, make_user(tenant, role=Role.OPERATOR))
        answer = stow(client, body(data))
        assert answer.status_code == 200, answer.content
        url = value(references(answer)[0][RETRIEVE_URL])
        assert url.startswith(f"http://{tenant.slug}.localhost/dicom-web/")
    copies = {}
    for tenant in (alpha, beta):
        (instance,) = instances(tenant).values()
        assert instance.sop_instance_uid == ds.SOPInstanceUID
        with schema_context(tenant.schema_name):
            path = instance_path(instance)
        assert path.is_relative_to(tenant.storage_root) and sha(path) == sha(data)
        copies[tenant.slug] = path
    assert copies["alpha"] != copies["beta"]
    # Removing alpha's copy leaves beta's untouched.
    copies["alpha"].unlink()
    assert sha(copies["beta"]) == sha(data)


# -- audit and jobs ---------------------------------------------------------------------------


def test_one_audit_row_per_request_with_the_counts(alpha, store_client):
    good, _ = dicom("MR_small.dcm")
    answer = stow(store_client, body(good, b"rubbish"))
    assert answer.status_code == 202
    (audit,) = store_audits(alpha)
    (job,) = stow_jobs(alpha)
    assert (audit.object_type, audit.object_id, audit.outcome) == (
        "ingestjob",
        str(job.pk),
        "success",
    )
    assert {k: audit.details[k] for k in ("status", "parts", "stored", "failed")} == {
        "status": 202,
        "parts": 2,
        "stored": 1,
        "failed": 1,
    }
    assert audit.details["token"]  # the token's key id, never the token
    with schema_context(alpha.schema_name):
        assert AuditEvent.objects.filter(action="ingest.job", object_id=str(job.pk)).count() == 1


def test_the_stow_job_shows_on_the_jobs_page(alpha, store_client, make_user):
    data, _ = dicom()
    assert stow(store_client, body(data)).status_code == 200
    admin = make_user(alpha, role=Role.ADMIN)
    page = logged_in(tenant_client(alpha), admin.username).get("/jobs/")
    assert page.status_code == 200
    assert "STOW-RS" in page.content.decode()


def test_control_characters_a_client_sent_never_reach_a_header(alpha, store_client):
    # Gunicorn answers 500 for a header value outside printable ASCII (and NUL would not
    # even fit a PostgreSQL text column): the reason quotes the part's type, cleaned.
    from gunicorn.http.wsgi import HEADER_VALUE_RE

    good, good_ds = dicom("MR_small.dcm")
    answer = stow(
        store_client,
        body(good, ("application/\x01evil\x00\x7f", b"x"), ("text/ünïcode", b"y")),
    )
    assert answer.status_code == 202, answer.content
    assert HEADER_VALUE_RE.fullmatch(answer["Warning"])
    assert "application/?evil??" in answer["Warning"]
    assert set(instances(alpha)) == {good_ds.SOPInstanceUID}


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns on the corpus's values
def test_the_hostile_corpus_fails_part_by_part_with_each_kinds_reason(
    alpha, store_client, tmp_path
):
    """Every kind of tests/studies/hostile.py as one part of one request: each refused part
    is a failure with the status its reason maps to, each valid kind is referenced and
    indexed, nothing refused is."""
    specimens = corpus(tmp_path)
    answer = stow(store_client, body(*(s.path.read_bytes() for s in specimens)))
    assert answer.status_code == 202, answer.content
    (job,) = stow_jobs(alpha)
    items = {i.name: i for i in items_of(alpha, job)}
    valid = {s.sop_instance_uid for s in specimens if s.expected == STORED}
    wrong = {}
    for index, specimen in enumerate(specimens, start=1):
        item = items[f"stow-part-{index}.dcm"]
        got = "" if item.outcome == ItemOutcome.STORED else item.reason_code
        if got != specimen.expected or (got and not item.reason):
            wrong[specimen.kind] = (specimen.expected, got, item.reason)
    assert wrong == {}
    assert {value(r[SOP_INSTANCE]) for r in references(answer)} == valid == set(instances(alpha))
    reasons = Counter(value(f[FAILURE_REASON]) for f in failures(answer))
    assert reasons == Counter(
        store_status(outcome=ItemOutcome.REJECTED, reason_code=s.expected)
        for s in specimens
        if s.expected != STORED
    )
