"""Headers every response carries so that one tenant's page cannot be turned against another's
when path routing puts them on one browser origin."""

import re

import pytest
from django.test import Client


def policy(response) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    header = response["Content-Security-Policy"]
    return {
        name: values
        for name, *values in (part.split() for part in header.split(";") if part.strip())
    }


@pytest.mark.parametrize(
    "path", ["/account/login/", "/", "/api/v1/studies/", "/no/such/page/", "/api/docs/"]
)
def test_tenant_responses_forbid_inline_script_framing_and_sniffing(alpha, path):
    response = Client(HTTP_HOST="alpha.localhost").get(path)
    assert response["X-Content-Type-Options"] == "nosniff"
    rules = policy(response)
    assert rules["script-src"] == ["'self'"]
    assert rules["default-src"] == ["'self'"]
    assert rules["frame-ancestors"] == ["'none'"] and rules["object-src"] == ["'none'"]
    assert "'unsafe-inline'" not in response["Content-Security-Policy"]
    assert "'unsafe-eval'" not in response["Content-Security-Policy"]


def test_the_super_admin_site_has_the_same_policy(superadmin_client):
    response = superadmin_client.get("/tenants/")
    assert response.status_code == 200
    assert policy(response)["script-src"] == ["'self'"]
    assert response["X-Content-Type-Options"] == "nosniff"


def test_the_tenant_colour_is_a_nonced_style_not_an_inline_attribute(alpha, alpha_admin_client):
    from django_tenants.utils import schema_context

    from configuration.models import TenantSettings
    from configuration.selectors import tenant_settings

    with schema_context(alpha.schema_name):
        tenant_settings()
        TenantSettings.objects.update(accent_colour="#12ab34")
    response = alpha_admin_client.get("/")
    page = response.content.decode()
    assert 'style="' not in page
    nonce = re.search(r'<style nonce="([^"]+)">\.topbar \{ --accent: #12ab34; \}', page)
    assert nonce, "the accent colour is not in a nonced <style>"
    assert f"'nonce-{nonce.group(1)}'" in policy(response)["style-src"]
    again = alpha_admin_client.get("/").content.decode()
    assert nonce.group(1) not in again, "a nonce must not be reused across responses"


def test_swagger_ui_is_served_by_the_portal_not_a_cdn(alpha_admin_client):
    page = alpha_admin_client.get("/api/docs/").content.decode()
    assert "cdn.jsdelivr.net" not in page and "https://" not in page
    assert "<script>" not in page and "<style>" not in page
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
