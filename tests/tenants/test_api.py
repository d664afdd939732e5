"""The super-admin REST API with tokens: same operations, same validation, no tenant tokens."""

from django.test import Client
from django_tenants.utils import schema_context

from accounts.services import api_token_create
from tenants.models import Tenant, TenantStatus


def api_client(token: str, host: str = "localhost") -> Client:
    return Client(HTTP_HOST=host, HTTP_AUTHORIZATION=f"Bearer {token}")


def test_tenant_crud_over_rest(superadmin, new_tenant):
    _, raw = api_token_create(user=superadmin, name="automation")
    client = api_client(raw)

    created = client.post(
        "/api/v1/tenants/",
        {
            "slug": "rest-made",
            "name": "Rest Made",
            "admin_email": "it@rest.example",
            "ae_title": "RESTMADE",
        },
        content_type="application/json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["status"] == "active" and body["schema_name"] == "t_rest_made"
    assert body["set_password_url"].startswith("https://rest-made.localhost/account/")

    listing = client.get("/api/v1/tenants/?status=active").json()
    assert "rest-made" in {t["slug"] for t in listing["results"]}
    assert client.get("/api/v1/tenants/rest-made/").json()["ae_title"] == "RESTMADE"
    patched = client.patch(
        "/api/v1/tenants/rest-made/", {"quota_users": 7}, content_type="application/json"
    )
    assert patched.json()["quota_users"] == 7

    assert (
        client.post(
            "/api/v1/tenants/rest-made/suspend/",
            {"reason": "test"},
            content_type="application/json",
        ).json()["status"]
        == "suspended"
    )
    conflict = client.post("/api/v1/tenants/rest-made/suspend/", content_type="application/json")
    assert conflict.status_code == 409 and "Cannot suspend" in conflict.json()["detail"]
    assert client.post("/api/v1/tenants/rest-made/resume/").json()["status"] == "active"

    refused = client.delete(
        "/api/v1/tenants/rest-made/", {"confirm_slug": "nope"}, content_type="application/json"
    )
    assert refused.status_code == 400 and "confirm_slug" in refused.json()
    deleted = client.delete(
        "/api/v1/tenants/rest-made/", {"confirm_slug": "rest-made"}, content_type="application/json"
    )
    assert deleted.status_code == 202 and deleted.json()["status"] == "deleted"
    tenant = Tenant.objects.get(slug="rest-made")
    assert tenant.events.filter(actor=f"{superadmin.username} (api)").count() == 5
    import shutil

    shutil.rmtree(tenant.storage_root, ignore_errors=True)


def test_validation_errors_name_the_field_and_create_nothing(superadmin):
    _, raw = api_token_create(user=superadmin, name="automation")
    response = api_client(raw).post(
        "/api/v1/tenants/",
        {"slug": "Bad!", "name": "", "admin_email": "x"},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert set(response.json()) >= {"slug", "name", "admin_email"}
    assert not Tenant.objects.filter(name="").exists()


def test_no_token_bad_token_and_tenant_tokens_are_refused(alpha, make_user):
    assert Client(HTTP_HOST="localhost").get("/api/v1/tenants/").status_code == 401
    assert api_client("pp_nothing_here").get("/api/v1/tenants/").status_code == 401
    assert api_client("garbage").get("/api/v1/tenants/").status_code == 401
    tenant_admin = make_user(alpha, username="alpha-ops")
    with schema_context(alpha.schema_name):
        _, raw = api_token_create(user=tenant_admin, name="ops")
    # The tenant's token works on its own tenant...
    assert api_client(raw, "alpha.localhost").get("/api/v1/me/").json()["tenant"] == "alpha"
    # ...is unknown to the platform and to the other tenant.
    assert api_client(raw).get("/api/v1/tenants/").status_code == 401
    assert api_client(raw, "beta.localhost").get("/api/v1/me/").status_code == 401
    assert api_client(raw).post("/api/v1/tenants/alpha/suspend/").status_code == 401
    assert Tenant.objects.get(slug="alpha").status == TenantStatus.ACTIVE


def test_superadmin_token_is_useless_on_tenant_sites(alpha, superadmin):
    _, raw = api_token_create(user=superadmin, name="automation")
    assert api_client(raw, "alpha.localhost").get("/api/v1/me/").status_code == 401


def test_openapi_schema_documents_the_tenant_api(superadmin_client):
    schema = superadmin_client.get("/api/schema/").content.decode()
    assert "/api/v1/tenants/{slug}/suspend/" in schema
    assert superadmin_client.get("/api/docs/").status_code == 200
