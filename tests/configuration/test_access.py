"""Who may read and change the configuration, and that one tenant never reaches another's."""

import pytest
from django_tenants.utils import schema_context

from accounts.models import Role
from configuration.services import settings_update
from tests.configuration.conftest import (
    add_node,
    add_rule,
    audit_of,
    changes_of,
    nodes_of,
    rules_of,
    settings_of,
)
from tests.conftest import tenant_client

STAFF = [Role.OPERATOR, Role.VIEWER, Role.AUDITOR]


def page_writes(node_id: int, rule_id: int) -> list[tuple[str, dict[str, str]]]:
    return [
        (
            "/settings/",
            {
                "section": "appearance",
                "appearance-accent_colour": "#000000",
                "appearance-timezone": "Asia/Tokyo",
            },
        ),
        (
            "/settings/",
            {
                "section": "identity",
                "identity-display_name": "Hijacked",
                "identity-ae_title": "HIJACK",
            },
        ),
        ("/settings/nodes/new/", {"ae_title": "EVIL", "host": "10.6.6.6", "port": "104"}),
        (f"/settings/nodes/{node_id}/", {"ae_title": "EVIL", "host": "10.6.6.6", "port": "104"}),
        (f"/settings/nodes/{node_id}/delete/", {}),
        (f"/settings/nodes/{node_id}/echo/", {}),
        (
            "/settings/retention/new/",
            {"modality": "*", "days": "1", "confirm_short": "on", "action": "save"},
        ),
        (
            f"/settings/retention/{rule_id}/",
            {"modality": "CT", "days": "1", "confirm_short": "on", "action": "save"},
        ),
        (f"/settings/retention/{rule_id}/delete/", {}),
    ]


def api_writes(node_id: int, rule_id: int) -> list[tuple[str, str, dict[str, object]]]:
    return [
        ("patch", "/api/v1/settings/", {"timezone": "Asia/Tokyo", "display_name": "Hijacked"}),
        ("post", "/api/v1/nodes/", {"ae_title": "EVIL", "host": "10.6.6.6", "port": 104}),
        ("patch", f"/api/v1/nodes/{node_id}/", {"host": "10.6.6.6"}),
        ("delete", f"/api/v1/nodes/{node_id}/", {}),
        ("post", f"/api/v1/nodes/{node_id}/echo/", {}),
        ("post", "/api/v1/retention-rules/", {"modality": "*", "days": 1, "confirm_short": True}),
        ("patch", f"/api/v1/retention-rules/{rule_id}/", {"days": 1, "confirm_short": True}),
        ("delete", f"/api/v1/retention-rules/{rule_id}/", {}),
    ]


def assert_nothing_changed(tenant, node, rule) -> None:  # type: ignore[no-untyped-def]
    assert nodes_of(tenant) == [node] and nodes_of(tenant)[0].host == node.host
    assert nodes_of(tenant)[0].last_echo_at is None
    assert rules_of(tenant) == [rule] and rules_of(tenant)[0].days == rule.days
    row = settings_of(tenant)
    assert (row.timezone, row.accent_colour) == ("UTC", "#1f6feb")
    tenant.refresh_from_db()
    assert (tenant.name, tenant.ae_title) == (f"{tenant.slug.title()} Hospital", "ALPHA")
    assert changes_of(tenant) == []
    for action in (
        "settings.update",
        "node.create",
        "node.update",
        "node.delete",
        "node.echo",
        "retention.create",
        "retention.update",
        "retention.delete",
    ):
        assert audit_of(tenant, action) == []


@pytest.mark.parametrize("role", STAFF)
def test_staff_roles_can_neither_see_nor_change_the_settings_pages(alpha, site_as, role):
    node, rule = add_node(alpha), add_rule(alpha)
    client = site_as(alpha, role)
    for path in (
        "/settings/",
        "/settings/history/",
        "/settings/nodes/new/",
        f"/settings/nodes/{node.pk}/",
        f"/settings/nodes/{node.pk}/delete/",
        "/settings/retention/new/",
        f"/settings/retention/{rule.pk}/",
        f"/settings/retention/{rule.pk}/delete/",
    ):
        assert client.get(path).status_code == 403, path
    for path, data in page_writes(node.pk, rule.pk):
        assert client.post(path, data).status_code == 403, path
    assert_nothing_changed(alpha, node, rule)


def test_anonymous_visitors_are_sent_to_the_login_page(alpha):
    node, rule = add_node(alpha), add_rule(alpha)
    client = tenant_client(alpha)
    for path in ("/settings/", "/settings/history/", "/settings/nodes/new/"):
        response = client.get(path)
        assert response.status_code == 302 and "/account/login/" in response["Location"]
    for path, data in page_writes(node.pk, rule.pk):
        response = client.post(path, data)
        assert response.status_code == 302 and "/account/login/" in response["Location"], path
    assert_nothing_changed(alpha, node, rule)


@pytest.mark.parametrize("role", STAFF)
def test_staff_roles_are_refused_by_the_api(alpha, api_as, role):
    node, rule = add_node(alpha), add_rule(alpha)
    client = api_as(alpha, role)
    for path in (
        "/api/v1/settings/",
        "/api/v1/nodes/",
        f"/api/v1/nodes/{node.pk}/",
        "/api/v1/retention-rules/",
        f"/api/v1/retention-rules/{rule.pk}/",
    ):
        assert client.get(path).status_code == 403, path
    dry = client.post(
        "/api/v1/retention-rules/dry-run/",
        {"modality": "CT", "days": 5},
        content_type="application/json",
    )
    assert dry.status_code == 403
    for method, path, data in api_writes(node.pk, rule.pk):
        response = getattr(client, method)(path, data, content_type="application/json")
        assert response.status_code == 403, (method, path)
    assert_nothing_changed(alpha, node, rule)


def test_anonymous_api_calls_are_unauthorised(alpha):
    node, rule = add_node(alpha), add_rule(alpha)
    client = tenant_client(alpha)
    assert client.get("/api/v1/settings/").status_code == 401
    for method, path, data in api_writes(node.pk, rule.pk):
        response = getattr(client, method)(path, data, content_type="application/json")
        assert response.status_code == 401, (method, path)
    assert_nothing_changed(alpha, node, rule)


def test_admins_may_open_every_page(alpha, alpha_admin_client):
    node, rule = add_node(alpha), add_rule(alpha)
    for path in (
        "/settings/",
        "/settings/history/",
        "/settings/nodes/new/",
        f"/settings/nodes/{node.pk}/",
        f"/settings/nodes/{node.pk}/delete/",
        "/settings/retention/new/",
        f"/settings/retention/{rule.pk}/",
        f"/settings/retention/{rule.pk}/delete/",
    ):
        assert alpha_admin_client.get(path).status_code == 200, path


def test_another_tenants_configuration_is_invisible_and_untouchable(
    alpha, beta, alpha_admin_client, api_as, make_user
):
    beta_admin = make_user(beta, username="bob")
    beta_node = add_node(beta, ae_title="BETA_CT", host="10.9.9.9", description="beta-only")
    beta_rule = add_rule(beta, modality="MG", days=4000)
    with schema_context(beta.schema_name):
        settings_update(
            tenant=beta,
            actor=beta_admin,
            timezone="America/Chicago",
            cors_origins=["https://beta-viewer.example"],
        )
    alpha_node = add_node(alpha, ae_title="ALPHA_CT")
    alpha_rule = add_rule(alpha, modality="CT")
    # The ids are beta's rows; alpha has rows too, so the ids are guessed in a populated table.
    page = alpha_admin_client.get("/settings/").content.decode()
    assert "ALPHA_CT" in page and "BETA_CT" not in page and "beta-only" not in page
    assert "<code>MG</code>" not in page and "beta-viewer" not in page
    assert 'name="appearance-timezone" value="UTC"' in page
    assert "America/Chicago" not in alpha_admin_client.get("/settings/history/").content.decode()
    api = api_as(alpha)
    assert [n["ae_title"] for n in api.get("/api/v1/nodes/").json()["results"]] == ["ALPHA_CT"]
    assert [r["modality"] for r in api.get("/api/v1/retention-rules/").json()["results"]] == ["CT"]
    assert api.get("/api/v1/settings/").json()["timezone"] == "UTC"
    guesses = {beta_node.pk, beta_rule.pk} - {alpha_node.pk, alpha_rule.pk}
    guesses |= {max(beta_node.pk, alpha_node.pk) + 1, max(beta_rule.pk, alpha_rule.pk) + 1}
    for pk in guesses:
        for path in (
            f"/settings/nodes/{pk}/",
            f"/settings/nodes/{pk}/delete/",
            f"/settings/retention/{pk}/",
            f"/settings/retention/{pk}/delete/",
        ):
            assert alpha_admin_client.get(path).status_code == 404, path
            assert alpha_admin_client.post(path, {}).status_code == 404, path
        assert alpha_admin_client.post(f"/settings/nodes/{pk}/echo/").status_code == 404
        for method, path in (
            ("get", f"/api/v1/nodes/{pk}/"),
            ("delete", f"/api/v1/nodes/{pk}/"),
            ("post", f"/api/v1/nodes/{pk}/echo/"),
            ("get", f"/api/v1/retention-rules/{pk}/"),
            ("delete", f"/api/v1/retention-rules/{pk}/"),
        ):
            assert getattr(api, method)(path).status_code == 404, (method, path)
    with schema_context(beta.schema_name):
        assert nodes_of(beta) == [beta_node] and rules_of(beta) == [beta_rule]
    assert nodes_of(beta)[0].last_echo_at is None
    assert settings_of(beta).timezone == "America/Chicago"
    assert settings_of(alpha).timezone == "UTC"
