"""CORS on /dicom-web/: only the active tenant's origins, exact echo, no credentials, any mode.

The DICOMweb views may answer 401/405 while they are written; the CORS headers are added
by the middleware whatever the view's status, so these tests look only at the headers.
"""

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django_tenants.utils import schema_context

from accounts.models import Role
from accounts.services import api_token_create
from configuration.selectors import tenant_settings
from tenants.models import Tenant
from tests.conftest import tenant_client

TRUSTED = "10.9.8.7"  # PORTAL_TRUSTED_PROXIES in tests/settings.py
ALPHA_VIEWER = "https://viewer.alpha.example"
BETA_VIEWER = "http://localhost:3000"
STRANGER = "https://evil.example"
QIDO = "/dicom-web/studies"
path_mode = override_settings(PORTAL_TENANT_ROUTING="path")


def set_origins(tenant: Tenant, origins: list[str]) -> None:
    with schema_context(tenant.schema_name):
        row = tenant_settings()
        row.cors_origins = origins
        row.save()


@pytest.fixture
def origins(alpha, beta) -> None:  # type: ignore[no-untyped-def]
    set_origins(alpha, [ALPHA_VIEWER])
    set_origins(beta, [BETA_VIEWER])


@pytest.fixture
def alpha_token(alpha, make_user) -> str:  # type: ignore[no-untyped-def]
    user = make_user(alpha, role=Role.VIEWER)
    with schema_context(alpha.schema_name):
        _, raw = api_token_create(user=user, name="viewer", scope="read")
    return raw


def preflight(client: Client, path: str, origin: str, **extra: str):  # type: ignore[no-untyped-def]
    return client.options(
        path,
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, accept",
        **extra,
    )


def vary(response) -> set[str]:  # type: ignore[no-untyped-def]
    return {v.strip().lower() for v in response.get("Vary", "").split(",") if v.strip()}


def assert_allowed(response, origin: str) -> None:  # type: ignore[no-untyped-def]
    assert response["Access-Control-Allow-Origin"] == origin
    assert "origin" in vary(response)
    assert not response.has_header("Access-Control-Allow-Credentials")


def assert_refused(response) -> None:  # type: ignore[no-untyped-def]
    assert not response.has_header("Access-Control-Allow-Origin")
    assert not response.has_header("Access-Control-Allow-Credentials")
    assert not response.has_header("Access-Control-Allow-Methods")


def test_preflight_from_the_tenants_viewer_is_answered(alpha, origins):
    response = preflight(tenant_client(alpha), QIDO, ALPHA_VIEWER)
    assert response.status_code == 200
    assert_allowed(response, ALPHA_VIEWER)
    methods = {m.strip() for m in response["Access-Control-Allow-Methods"].split(",")}
    assert methods == {"GET", "POST", "OPTIONS"}
    headers = {h.strip() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "accept", "content-type"} <= headers
    assert int(response["Access-Control-Max-Age"]) > 0


def test_get_with_a_token_from_the_tenants_viewer_echoes_the_origin(alpha, origins, alpha_token):
    client = tenant_client(alpha, HTTP_AUTHORIZATION=f"Bearer {alpha_token}")
    response = client.get(QIDO, HTTP_ORIGIN=ALPHA_VIEWER)
    assert_allowed(response, ALPHA_VIEWER)
    exposed = {h.strip().lower() for h in response["Access-Control-Expose-Headers"].split(",")}
    assert {"content-type", "content-length", "warning", "content-location"} <= exposed


def test_an_unlisted_origin_gets_no_cors_headers(alpha, origins, alpha_token):
    client = tenant_client(alpha, HTTP_AUTHORIZATION=f"Bearer {alpha_token}")
    response = client.get(QIDO, HTTP_ORIGIN=STRANGER)
    assert_refused(response)
    assert "origin" in vary(response)  # caches must not reuse it for a listed origin
    assert_refused(preflight(client, QIDO, STRANGER))
    assert_refused(client.get(QIDO, HTTP_ORIGIN="null"))
    # A look-alike of the listed origin is not the listed origin.
    assert_refused(client.get(QIDO, HTTP_ORIGIN=ALPHA_VIEWER + ".evil.example"))
    assert_refused(client.get(QIDO, HTTP_ORIGIN="http://viewer.alpha.example"))


def test_another_tenants_origin_is_refused_here_and_allowed_there(alpha, beta, origins):
    assert_refused(preflight(tenant_client(alpha), QIDO, BETA_VIEWER))
    assert_refused(tenant_client(alpha).get(QIDO, HTTP_ORIGIN=BETA_VIEWER))
    assert_allowed(preflight(tenant_client(beta), QIDO, BETA_VIEWER), BETA_VIEWER)
    assert_refused(preflight(tenant_client(beta), QIDO, ALPHA_VIEWER))
    # And back: nothing of beta's answer stayed behind for alpha.
    assert_allowed(preflight(tenant_client(alpha), QIDO, ALPHA_VIEWER), ALPHA_VIEWER)


def test_a_tenant_without_origins_allows_none(alpha, beta):
    set_origins(alpha, [])
    set_origins(beta, [ALPHA_VIEWER])
    assert_refused(preflight(tenant_client(alpha), QIDO, ALPHA_VIEWER))


@pytest.mark.parametrize(
    "path", ["/dicom-web/series", "/dicom-web/studies/1.2.3/metadata", "/dicom-web/wado"]
)
def test_every_dicomweb_resource_is_covered(alpha, origins, path):
    assert_allowed(preflight(tenant_client(alpha), path, ALPHA_VIEWER), ALPHA_VIEWER)


@pytest.mark.parametrize("path", ["/api/v1/me/", "/settings/", "/account/login/", "/", "/studies/"])
def test_pages_and_the_api_never_get_cors_headers(alpha, origins, alpha_token, path):
    client = tenant_client(alpha, HTTP_AUTHORIZATION=f"Bearer {alpha_token}")
    response = client.get(path, HTTP_ORIGIN=ALPHA_VIEWER)
    assert_refused(response)
    assert "origin" not in vary(response)
    assert_refused(preflight(client, path, ALPHA_VIEWER))


def test_the_platform_site_has_no_dicomweb_cors(alpha, origins):
    response = preflight(Client(HTTP_HOST="localhost"), QIDO, ALPHA_VIEWER)
    assert_refused(response)


def test_a_listed_default_port_matches_what_browsers_send(alpha, beta):
    set_origins(alpha, ["https://pacs-viewer.example:443", "http://127.0.0.1:8080"])
    set_origins(beta, [])
    client = tenant_client(alpha)
    assert_allowed(
        preflight(client, QIDO, "https://pacs-viewer.example"), "https://pacs-viewer.example"
    )
    assert_allowed(preflight(client, QIDO, "http://127.0.0.1:8080"), "http://127.0.0.1:8080")
    assert_refused(preflight(client, QIDO, "http://127.0.0.1"))


def test_the_origins_cost_one_query_per_request(alpha, origins, alpha_token):
    client = tenant_client(alpha, HTTP_AUTHORIZATION=f"Bearer {alpha_token}")
    for send in (
        lambda: preflight(client, QIDO, ALPHA_VIEWER),
        lambda: client.get(QIDO, HTTP_ORIGIN=ALPHA_VIEWER),
        lambda: client.get(QIDO, HTTP_ORIGIN=STRANGER),
    ):
        with CaptureQueriesContext(connection) as queries:
            send()
        reads = [q for q in queries.captured_queries if "configuration_tenantsettings" in q["sql"]]
        assert len(reads) == 1, [q["sql"] for q in reads]


def test_requests_without_an_origin_read_no_settings(alpha, origins, alpha_token):
    client = tenant_client(alpha, HTTP_AUTHORIZATION=f"Bearer {alpha_token}")
    with CaptureQueriesContext(connection) as queries:
        response = client.get(QIDO)
    assert not response.has_header("Access-Control-Allow-Origin")
    assert not [q for q in queries.captured_queries if "configuration_tenantsettings" in q["sql"]]


@path_mode
def test_path_mode_allows_the_tenants_viewer_below_its_prefix(alpha, beta, origins, alpha_token):
    client = Client(HTTP_HOST="localhost")
    response = preflight(client, f"/t/alpha{QIDO}", ALPHA_VIEWER)
    assert response.status_code == 200
    assert_allowed(response, ALPHA_VIEWER)
    response = client.get(
        f"/t/alpha{QIDO}", HTTP_ORIGIN=ALPHA_VIEWER, HTTP_AUTHORIZATION=f"Bearer {alpha_token}"
    )
    assert_allowed(response, ALPHA_VIEWER)
    assert_refused(preflight(client, f"/t/alpha{QIDO}", BETA_VIEWER))
    assert_refused(preflight(client, f"/t/beta{QIDO}", ALPHA_VIEWER))
    assert_allowed(preflight(client, f"/t/beta{QIDO}", BETA_VIEWER), BETA_VIEWER)
    assert_refused(preflight(client, "/t/alpha/api/v1/me/", ALPHA_VIEWER))
    assert_refused(preflight(client, "/t/alpha/settings/", ALPHA_VIEWER))


def test_a_trusted_proxys_prefix_does_not_hide_dicomweb(alpha, origins):
    client = Client(HTTP_HOST="localhost", REMOTE_ADDR=TRUSTED)
    proxied = {"HTTP_X_TENANT": "alpha", "HTTP_X_FORWARDED_PREFIX": "/alpha/pacs"}
    assert_allowed(preflight(client, QIDO, ALPHA_VIEWER, **proxied), ALPHA_VIEWER)
    assert_refused(preflight(client, QIDO, BETA_VIEWER, **proxied))
    assert_refused(preflight(client, "/settings/", ALPHA_VIEWER, **proxied))
