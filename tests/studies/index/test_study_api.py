"""/api/v1/studies/: search, detail with series, delete by role, and tenant isolation."""

import pytest
from django_tenants.utils import schema_context
from pydicom.uid import generate_uid

from accounts.models import Role, TokenScope
from accounts.services import api_token_create
from audit.models import AuditEvent
from tests.conftest import tenant_client
from tests.studies.index import test_study_pages as pages
from tests.studies.index.test_study_pages import dicom, store, study_of

archive = pages.archive  # the same three alpha studies and one beta study as the pages use


@pytest.fixture
def api_as(alpha, make_user):
    def make(role: str, tenant=None, scope: str = TokenScope.FULL):
        tenant = tenant or alpha
        user = make_user(tenant, role=role)
        with schema_context(tenant.schema_name):
            _, raw = api_token_create(user=user, name="test", scope=scope)
        return tenant_client(tenant, HTTP_AUTHORIZATION=f"Bearer {raw}")

    return make


def test_the_list_filters_like_the_page_and_hides_beta(api_as, archive):
    client = api_as(Role.VIEWER)
    everything = client.get("/api/v1/studies/").json()
    assert everything["count"] == 3
    assert archive["beta"] not in {s["study_instance_uid"] for s in everything["results"]}
    found = client.get("/api/v1/studies/", {"patient_name": "doe*", "sort": "patient_name"}).json()
    assert [s["study_instance_uid"] for s in found["results"]] == [archive["doe"], archive["mr"]]
    assert found["results"][0]["modalities"] == ["CT"]
    page = client.get("/api/v1/studies/", {"limit": 1, "offset": 1}).json()
    assert len(page["results"]) == 1 and page["count"] == 3


def test_invalid_filters_are_refused_with_their_message(api_as, archive):
    client = api_as(Role.VIEWER)
    response = client.get("/api/v1/studies/", {"date_from": "2024-03-01", "date_to": "2024-01-01"})
    assert response.status_code == 400
    assert response.json()["date_to"] == ["The end date is before the start date."]
    assert client.get("/api/v1/studies/", {"sort": "sha256"}).status_code == 400
    assert client.get("/api/v1/studies/", {"date_from": "yesterday"}).status_code == 400


def test_the_detail_has_its_series_and_is_audited(alpha, api_as, archive):
    response = api_as(Role.VIEWER).get(f"/api/v1/studies/{archive['doe']}/")
    assert response.status_code == 200
    body = response.json()
    assert body["patient_name"] == "DOE^JOHN" and body["num_instances"] == 1
    assert [s["num_instances"] for s in body["series"]] == [1]
    assert body["series"][0]["media"] == ["default"]
    with schema_context(alpha.schema_name):
        assert AuditEvent.objects.filter(action="study.view", object_type="study").exists()


@pytest.mark.parametrize("uid", ["{beta}", "1.2.3.4", "{long}"])
def test_betas_and_unknown_uids_are_404(beta, api_as, archive, uid):
    uid = uid.format(beta=archive["beta"], long="1." * 40)
    client = api_as(Role.ADMIN)
    assert client.get(f"/api/v1/studies/{uid}/").status_code == 404
    assert client.delete(f"/api/v1/studies/{uid}/").status_code == 404
    assert study_of(beta, archive["beta"]) is not None


@pytest.mark.parametrize(
    ("role", "scope", "status"),
    [
        (Role.VIEWER, TokenScope.FULL, 403),
        (Role.ADMIN, TokenScope.READ, 403),
        (Role.ADMIN, TokenScope.STORE, 403),
        (Role.OPERATOR, TokenScope.FULL, 204),
        (Role.ADMIN, TokenScope.FULL, 204),
    ],
)
def test_delete_needs_studies_manage_and_a_full_token(
    alpha, api_as, archive, role, scope, status, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = api_as(role, scope=scope).delete(f"/api/v1/studies/{archive['doe']}/")
    assert response.status_code == status
    still_there = study_of(alpha, archive["doe"]) is not None
    assert still_there == (status != 204)
    with schema_context(alpha.schema_name):
        assert AuditEvent.objects.filter(action="study.delete").exists() == (status == 204)


def test_a_token_of_beta_is_refused_by_alpha(alpha, beta, make_user, archive):
    user = make_user(beta, role=Role.ADMIN)
    with schema_context(beta.schema_name):
        _, raw = api_token_create(user=user, name="intruder")
    client = tenant_client(alpha, HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get("/api/v1/studies/").status_code == 401
    assert client.delete(f"/api/v1/studies/{archive['doe']}/").status_code == 401
    assert study_of(alpha, archive["doe"]) is not None


def test_a_new_study_appears_in_the_api(alpha, storage, api_as):
    uid = generate_uid()
    store(alpha, dicom(StudyInstanceUID=uid, PatientName="NEW^ONE"))
    results = api_as(Role.VIEWER).get("/api/v1/studies/", {"patient_name": "new*"}).json()
    assert [s["study_instance_uid"] for s in results["results"]] == [uid]
