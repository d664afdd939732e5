"""/api/v1/media/: the same rules and messages as the pages, roles, pages of results, filters."""

from pathlib import Path

import pytest
from django_tenants.utils import schema_context

from accounts.models import Role, TokenScope
from accounts.services import api_token_create
from studies.models import StorageMedium
from tests.conftest import tenant_client
from tests.studies.conftest import GIB, audit_actions, media_state

BETA_ID = 987_654_321


@pytest.fixture
def api_as(alpha, make_user):
    """An alpha API client with a token of a user of `role` (None: anonymous)."""

    def make(role: str | None, scope: str = TokenScope.FULL):
        if role is None:
            return tenant_client(alpha)
        user = make_user(alpha, role=role)
        with schema_context(alpha.schema_name):
            _, raw = api_token_create(user=user, name="test", scope=scope)
        return tenant_client(alpha, HTTP_AUTHORIZATION=f"Bearer {raw}")

    return make


@pytest.fixture
def admin_api(api_as):
    return api_as(Role.ADMIN)


def _body(**overrides):
    return {"name": "disk3", "root": "disk3", "capacity_bytes": GIB, **overrides}


def test_list_pages_and_filters_alphas_media_only(admin_api, add_medium, beta, storage):
    with schema_context(beta.schema_name):
        StorageMedium.objects.create(
            pk=BETA_ID, name="beta-secret", root=f"{beta.storage_root}/s", capacity_bytes=GIB
        )
    add_medium("disk2", priority=9)
    add_medium("disk3", status="offline")
    everything = admin_api.get("/api/v1/media/").json()
    assert everything["count"] == 3
    assert [m["name"] for m in everything["results"]] == ["disk2", "default", "disk3"]
    assert "beta-secret" not in str(everything)
    first = admin_api.get("/api/v1/media/?limit=1").json()
    assert len(first["results"]) == 1 and first["next"] and first["count"] == 3
    offline = admin_api.get("/api/v1/media/?status=offline").json()
    assert [m["name"] for m in offline["results"]] == ["disk3"]
    assert admin_api.get("/api/v1/media/?kind=s3").json()["count"] == 0
    assert admin_api.get("/api/v1/media/?status=bogus").status_code == 400


def test_create_returns_the_medium_and_audits_it(alpha, admin_api, storage):
    response = admin_api.post("/api/v1/media/", _body(priority=4), content_type="application/json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["root"] == str(storage.resolve() / "disk3") and body["priority"] == 4
    assert body["status"] == "online" and body["used_percent"] == 0.0
    assert (storage / "disk3").is_dir()
    assert audit_actions(alpha) == ["medium.create"]


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"root": "../escape"}, "root", "must lie inside the tenant's allowed root"),
        ({"root": "/etc"}, "root", "must lie inside the tenant's allowed root"),
        ({"root": "default/x"}, "root", "lies inside medium “default”"),
        ({"low_watermark": 0}, "low_watermark", "above 0 %"),
        ({"low_watermark": 95, "high_watermark": 90}, "low_watermark", "below the high one"),
        ({"high_watermark": 101}, "high_watermark", "at most 100 %"),
        ({"capacity_bytes": 0}, "capacity_bytes", "more than 0"),
        ({"capacity_bytes": 11 * GIB}, "capacity_bytes", "exceeds the tenant's quota of 10.0 GiB"),
        ({"kind": "s3", "endpoint_url": "http://10.0.0.5:9000"}, "endpoint_url", "https://"),
        ({"name": "default"}, "name", "exists already"),
    ],
)
def test_create_refuses_with_the_services_messages(
    alpha, admin_api, storage, overrides, field, message
):
    before = media_state(alpha)
    response = admin_api.post("/api/v1/media/", _body(**overrides), content_type="application/json")
    assert response.status_code == 400
    assert message in response.json()[field][0]
    assert media_state(alpha) == before
    assert not (storage / "disk3").exists() and not (storage.parent / "escape").exists()
    assert audit_actions(alpha) == []


def test_update_status_probe_measure_and_delete(alpha, admin_api, add_medium):
    medium = add_medium("disk2")
    url = f"/api/v1/media/{medium.pk}/"
    patched = admin_api.patch(url, {"priority": 3}, content_type="application/json")
    assert patched.status_code == 200 and patched.json()["priority"] == 3
    too_big = admin_api.patch(url, {"capacity_bytes": 11 * GIB}, content_type="application/json")
    assert too_big.status_code == 400 and "quota" in too_big.json()["capacity_bytes"][0]

    probe = admin_api.post(url + "probe/").json()
    assert probe["ok"] is True and probe["free_bytes"] > 0 and probe["write_mb_per_s"] > 0
    assert admin_api.get(url).json()["last_probe_ok"] is True

    (Path(medium.root) / "a.dcm").write_bytes(b"x" * 500)
    measured = admin_api.post("/api/v1/media/measure-usage/").json()
    assert measured == {"media": 2, "files": 1, "bytes": 500}
    refused = admin_api.delete(url)
    assert refused.status_code == 400 and "retire it instead" in str(refused.json())
    retired = admin_api.post(
        url + "status/", {"status": "retired"}, content_type="application/json"
    )
    assert retired.status_code == 200 and retired.json()["status"] == "retired"

    (Path(medium.root) / "a.dcm").unlink()
    assert admin_api.delete(url).status_code == 204
    assert admin_api.get(url).status_code == 404
    assert audit_actions(alpha) == [
        "medium.create",
        "medium.update",
        "medium.probe",
        "medium.status_change",
        "medium.delete",
    ]


def _writes(pk: int) -> list[tuple[str, str, dict]]:
    return [
        ("post", "/api/v1/media/", _body()),
        ("patch", f"/api/v1/media/{pk}/", {"name": "renamed"}),
        ("post", f"/api/v1/media/{pk}/status/", {"status": "retired"}),
        ("post", f"/api/v1/media/{pk}/probe/", {}),
        ("post", "/api/v1/media/measure-usage/", {}),
        ("delete", f"/api/v1/media/{pk}/", {}),
    ]


@pytest.mark.parametrize("role", [*Role, None])
def test_reading_needs_storage_view(api_as, add_medium, role):
    medium = add_medium("disk2")
    client = api_as(role)
    expected = {None: 401, Role.ADMIN: 200, Role.OPERATOR: 200}.get(role, 403)
    assert client.get("/api/v1/media/").status_code == expected
    assert client.get(f"/api/v1/media/{medium.pk}/").status_code == expected


@pytest.mark.parametrize(
    ("role", "scope"),
    [
        (Role.OPERATOR, TokenScope.FULL),
        (Role.VIEWER, TokenScope.FULL),
        (Role.AUDITOR, TokenScope.FULL),
        (None, None),
        (Role.ADMIN, TokenScope.READ),
        (Role.ADMIN, TokenScope.STORE),
    ],
)
def test_changes_need_storage_manage_and_a_full_token(
    alpha, storage, api_as, add_medium, role, scope
):
    medium = add_medium("disk2")
    (Path(medium.root) / "a.dcm").write_bytes(b"x")
    client = api_as(role, scope) if role else api_as(None)
    before = media_state(alpha)
    for method, path, data in _writes(medium.pk):
        response = getattr(client, method)(path, data, content_type="application/json")
        assert response.status_code == (401 if role is None else 403), (method, path)
    assert media_state(alpha) == before
    with schema_context(alpha.schema_name):
        assert StorageMedium.objects.get(pk=medium.pk).used_bytes == 0
    assert audit_actions(alpha) == ["medium.create"]
    assert not (storage / "disk3").exists()


def test_an_admin_token_works_for_every_change(alpha, admin_api, add_medium):
    medium = add_medium("disk2")
    statuses = [
        getattr(admin_api, method)(path, data, content_type="application/json").status_code
        for method, path, data in _writes(medium.pk)
    ]
    assert statuses == [201, 200, 200, 200, 200, 204]


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("get", ""), ("patch", ""), ("delete", ""), ("post", "status/"), ("post", "probe/")],
)
def test_betas_medium_is_a_404_through_alphas_api(alpha, beta, admin_api, storage, method, suffix):
    with schema_context(beta.schema_name):
        StorageMedium.objects.create(
            pk=BETA_ID, name="beta-secret", root=f"{beta.storage_root}/s", capacity_bytes=GIB
        )
    with schema_context(alpha.schema_name):
        assert not StorageMedium.objects.filter(pk=BETA_ID).exists()
    before = media_state(beta)
    response = getattr(admin_api, method)(
        f"/api/v1/media/{BETA_ID}/{suffix}",
        {"status": "retired", "name": "stolen"},
        content_type="application/json",
    )
    assert response.status_code == 404
    assert media_state(beta) == before and audit_actions(beta) == []
