"""The OHIF data source on /settings/ and /settings/ohif.json: this tenant's URLs, no secret."""

import json

import pytest
from django.test import Client, override_settings
from django.urls import set_script_prefix
from django_tenants.utils import schema_context

from accounts.models import Role
from configuration.ohif import ohif_config
from configuration.selectors import tenant_settings
from tenants.models import Tenant
from tests.conftest import logged_in, tenant_client

TRUSTED = "10.9.8.7"  # PORTAL_TRUSTED_PROXIES in tests/settings.py


def set_origins(tenant: Tenant, origins: list[str]) -> None:
    with schema_context(tenant.schema_name):
        row = tenant_settings()
        row.cors_origins = origins
        row.save()


def data_source(config: dict) -> dict:  # type: ignore[type-arg]
    [source] = config["dataSources"]
    assert config["defaultDataSourceName"] == source["sourceName"] == "dicomweb"
    assert source["namespace"] == "@ohif/extension-default.dataSourcesModule.dicomweb"
    return source["configuration"]  # type: ignore[no-any-return]


def test_the_json_points_at_this_tenant_only(alpha, beta, alpha_admin_client):
    response = alpha_admin_client.get("/settings/ohif.json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == 'attachment; filename="ohif-alpha.json"'
    source = data_source(response.json())
    assert source["qidoRoot"] == source["wadoRoot"] == "http://alpha.localhost/dicom-web"
    assert source["wadoUriRoot"] == "http://alpha.localhost/dicom-web/wado"
    assert source["friendlyName"] == "Alpha Hospital" and source["name"] == "alpha"
    assert source["imageRendering"] == source["thumbnailRendering"] == "wadors"
    assert source["qidoSupportsIncludeField"] and source["enableStudyLazyLoad"]
    assert not source["supportsReject"] and not source["staticWado"]
    assert source["bulkDataURI"] == {"enabled": True}
    assert "beta" not in response.content.decode().lower()


def test_no_credential_is_ever_written_into_it(alpha, alpha_admin_client):
    body = alpha_admin_client.get("/settings/ohif.json").content.decode()
    assert "requestOptions" not in body and "pp_" not in body and "Bearer" not in body


@override_settings(PORTAL_TENANT_ROUTING="path")
def test_path_mode_urls_keep_the_tenant_prefix(alpha, alpha_admin):
    client = logged_in(Client(HTTP_HOST="localhost"), alpha_admin.username, prefix="/t/alpha")
    source = data_source(client.get("/t/alpha/settings/ohif.json").json())
    assert source["qidoRoot"] == source["wadoRoot"] == "http://localhost/t/alpha/dicom-web"
    assert source["wadoUriRoot"] == "http://localhost/t/alpha/dicom-web/wado"
    page = client.get("/t/alpha/settings/").content.decode()
    assert "http://localhost/t/alpha/dicom-web" in page


def test_a_proxy_prefix_is_kept(alpha, alpha_admin):
    proxied = {"HTTP_X_TENANT": "alpha", "HTTP_X_FORWARDED_PREFIX": "/alpha/pacs"}
    client = Client(HTTP_HOST="localhost", REMOTE_ADDR=TRUSTED, **proxied)
    logged_in(client, alpha_admin.username)
    source = data_source(client.get("/settings/ohif.json").json())
    assert source["qidoRoot"] == "http://localhost/alpha/pacs/dicom-web"


@override_settings(PORTAL_URL_SCHEME="https", PORTAL_URL_PORT=8443)
def test_without_a_request_the_configured_tenant_links_are_used(alpha):
    set_script_prefix("/")
    source = data_source(ohif_config(alpha))
    assert source["qidoRoot"] == "https://alpha.localhost:8443/dicom-web"
    assert source["wadoUriRoot"] == "https://alpha.localhost:8443/dicom-web/wado"
    with override_settings(PORTAL_TENANT_URL_TEMPLATE="https://pacs.example.org/{slug}"):
        assert data_source(ohif_config(alpha))["wadoRoot"] == (
            "https://pacs.example.org/alpha/dicom-web"
        )


def test_the_settings_page_shows_it_ready_to_copy(alpha, beta, alpha_admin_client):
    set_origins(beta, ["https://viewer.beta.example"])
    set_origins(alpha, [])
    response = alpha_admin_client.get("/settings/")
    page = response.content.decode()
    assert 'id="ohif"' in page and 'href="#ohif"' in page
    assert 'No <a href="#cors">CORS origins</a> are listed yet' in page
    assert 'href="/settings/ohif.json"' in page
    assert 'id="ohif-copy" aria-controls="ohif-config" data-copy="ohif-config"' in page
    assert 'role="status"' in page and '<label for="ohif-config">' in page
    assert "read</code>" in page and "Authorization: Bearer" in page
    shown = json.loads(response.context["ohif_json"])
    assert data_source(shown)["qidoRoot"] == "http://alpha.localhost/dicom-web"
    # The textarea holds the same JSON, HTML-escaped.
    assert "&quot;qidoRoot&quot;: &quot;http://alpha.localhost/dicom-web&quot;" in page
    assert "viewer.beta.example" not in page and "beta.localhost" not in page


def test_the_page_lists_the_origins_a_viewer_may_use(alpha, alpha_admin_client):
    set_origins(alpha, ["https://viewer.alpha.example"])
    page = alpha_admin_client.get("/settings/").content.decode()
    section = page[page.index('id="ohif"') : page.index('id="appearance"')]
    assert "<code>https://viewer.alpha.example</code>" in section
    assert "No <a" not in section


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.VIEWER, Role.AUDITOR])
def test_whoever_cannot_open_settings_cannot_get_the_json(alpha, make_user, role):
    user = make_user(alpha, role=role)
    client = logged_in(tenant_client(alpha), user.username)
    assert client.get("/settings/").status_code == 403
    response = client.get("/settings/ohif.json")
    assert response.status_code == 403
    assert b"dicom-web" not in response.content


def test_anonymous_visitors_are_sent_to_the_login_page(alpha):
    response = tenant_client(alpha).get("/settings/ohif.json")
    assert response.status_code == 302 and "/account/login/" in response["Location"]
