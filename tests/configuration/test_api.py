"""/api/v1/settings/, nodes/ and retention-rules/: the same validation and history as the pages."""

import pytest
from django_tenants.utils import schema_context

from accounts.models import Role
from configuration.services import settings_update
from tenants.models import Tenant
from tests.configuration.conftest import (
    add_node,
    add_rule,
    audit_of,
    changes_of,
    nodes_of,
    rules_of,
    settings_of,
)


def test_settings_get_shows_identity_and_defaults(alpha, api_as):
    body = api_as(alpha).get("/api/v1/settings/").json()
    assert body["display_name"] == "Alpha Hospital" and body["ae_title"] == "ALPHA"
    assert body["duplicate_policy"] == "keep-first" and body["cors_origins"] == []
    assert body["require_admin_2fa"] is False and body["timezone"] == "UTC"
    assert body["job_retention"] is False and body["job_storage_usage"] is True


def test_settings_patch_changes_a_subset_and_versions_it(alpha, api_as):
    client = api_as(alpha)
    response = client.patch(
        "/api/v1/settings/",
        {"cors_origins": ["https://viewer.example.org"], "display_name": "Alpha Imaging"},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["cors_origins"] == ["https://viewer.example.org"]
    assert response.json()["display_name"] == "Alpha Imaging"
    assert Tenant.objects.get(pk=alpha.pk).name == "Alpha Imaging"
    assert {c.field for c in changes_of(alpha)} == {"cors_origins", "display_name"}
    assert len(audit_of(alpha, "settings.update")) == 1


@pytest.mark.parametrize(
    ("payload", "field", "expected"),
    [
        ({"cors_origins": ["*"]}, "cors_origins", "Wildcards"),
        ({"cors_origins": ["https://a.example/"]}, "cors_origins", "no path"),
        ({"accent_colour": "#12"}, "accent_colour", "#rrggbb"),
        ({"timezone": "Nowhere/City"}, "timezone", "not a known time zone"),
        ({"ae_title": "BETA"}, "ae_title", "only the platform administrator"),
        ({"ae_title": "ALPHA2"}, "ae_title", "only the platform administrator"),
        ({"duplicate_policy": "both"}, "duplicate_policy", "not a valid choice"),
    ],
)
def test_settings_patch_refuses_invalid_values_entirely(alpha, api_as, payload, field, expected):
    response = api_as(alpha).patch(
        "/api/v1/settings/",
        {**payload, "timezone": payload.get("timezone", "Europe/Oslo")},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert expected in " ".join(response.json()[field])
    assert settings_of(alpha).timezone == "UTC"  # the valid value of the request is not kept
    assert Tenant.objects.get(pk=alpha.pk).ae_title == "ALPHA"
    assert changes_of(alpha) == []


def test_node_crud_through_the_api(alpha, api_as):
    client = api_as(alpha)
    created = client.post(
        "/api/v1/nodes/",
        {"ae_title": "US1", "host": "us1.example", "port": 104},
        content_type="application/json",
    )
    assert created.status_code == 201, created.content
    node_id = created.json()["id"]
    listed = client.get("/api/v1/nodes/").json()
    assert [n["ae_title"] for n in listed["results"]] == ["US1"]
    patched = client.patch(
        f"/api/v1/nodes/{node_id}/", {"port": 11112}, content_type="application/json"
    )
    assert patched.json()["port"] == 11112
    put = client.put(
        f"/api/v1/nodes/{node_id}/",
        {"ae_title": "US2", "host": "us1.example", "port": 11112, "description": "Echo room"},
        content_type="application/json",
    )
    assert put.json()["ae_title"] == "US2" and put.json()["description"] == "Echo room"
    assert client.delete(f"/api/v1/nodes/{node_id}/").status_code == 204
    assert nodes_of(alpha) == []
    assert [
        e.action
        for e in audit_of(alpha, "node.create")
        + audit_of(alpha, "node.update")
        + audit_of(alpha, "node.delete")
    ] == ["node.create", "node.update", "node.update", "node.delete"]
    assert [c.field for c in changes_of(alpha, subject="node")][5:8] == [
        "port",
        "ae_title",
        "description",
    ]


@pytest.mark.parametrize(
    ("payload", "field", "expected"),
    [
        ({"ae_title": "A" * 17}, "ae_title", "no more than 16"),
        ({"ae_title": "A\\B"}, "ae_title", "backslash"),
        ({"host": "bad host"}, "host", "IP address or a host name"),
        ({"port": 0}, "port", "greater than or equal to 1"),
        ({"port": 70000}, "port", "less than or equal to 65535"),
        ({"tls_certificate_sha256": "12:34"}, "tls_certificate_sha256", "64 hexadecimal"),
    ],
)
def test_node_api_validation(alpha, api_as, payload, field, expected):
    response = api_as(alpha).post(
        "/api/v1/nodes/",
        {"ae_title": "US1", "host": "10.0.0.1", "port": 104, **payload},
        content_type="application/json",
    )
    assert response.status_code == 400 and expected in " ".join(response.json()[field])
    assert nodes_of(alpha) == [] and changes_of(alpha) == []


def test_node_api_pins_a_client_certificate(alpha, api_as):
    fingerprint = "ab" * 32
    created = api_as(alpha).post(
        "/api/v1/nodes/",
        {"ae_title": "US1", "host": "10.0.0.1", "port": 104, "tls_certificate_sha256": "AB" * 32},
        content_type="application/json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["tls_certificate_sha256"] == fingerprint
    assert [n.tls_certificate_sha256 for n in nodes_of(alpha)] == [fingerprint]


def test_node_api_refuses_a_duplicate_address(alpha, api_as):
    add_node(alpha, ae_title="US1", host="10.0.0.1", port=104)
    response = api_as(alpha).post(
        "/api/v1/nodes/",
        {"ae_title": "US1", "host": "10.0.0.1", "port": 104},
        content_type="application/json",
    )
    assert response.status_code == 400 and "already listed" in str(response.json())
    assert len(nodes_of(alpha)) == 1


def test_retention_rule_crud_and_dry_run(alpha, api_as):
    client = api_as(alpha)
    dry = client.post(
        "/api/v1/retention-rules/dry-run/",
        {"modality": "MR", "days": 90},
        content_type="application/json",
    )
    assert dry.status_code == 200
    assert dry.json()["available"] is True and dry.json()["studies"] == 0
    assert dry.json()["summary"].startswith("This rule would delete 0 studies")
    assert rules_of(alpha) == [] and changes_of(alpha) == []  # a dry run saves nothing
    created = client.post(
        "/api/v1/retention-rules/",
        {"modality": "MR", "days": 90},
        content_type="application/json",
    )
    assert created.status_code == 201 and created.json()["enabled"] is True
    rule_id = created.json()["id"]
    patched = client.patch(
        f"/api/v1/retention-rules/{rule_id}/",
        {"enabled": False},
        content_type="application/json",
    )
    assert patched.json()["enabled"] is False and patched.json()["days"] == 90
    assert client.delete(f"/api/v1/retention-rules/{rule_id}/").status_code == 204
    assert rules_of(alpha) == []
    actions = [
        e.action
        for a in ("retention.create", "retention.update", "retention.delete")
        for e in audit_of(alpha, a)
    ]
    assert actions == ["retention.create", "retention.update", "retention.delete"]


@pytest.mark.parametrize(
    ("payload", "field", "expected"),
    [
        ({"modality": "mr"}, "modality", "uppercase"),
        ({"modality": "M"}, "modality", "DICOM modality code"),
        ({"days": 0}, "days", "greater than or equal to 1"),
        ({"days": 10}, "confirm_short", "I understand"),
    ],
)
def test_retention_api_validation(alpha, api_as, payload, field, expected):
    response = api_as(alpha).post(
        "/api/v1/retention-rules/",
        {"modality": "MR", "days": 90, **payload},
        content_type="application/json",
    )
    assert response.status_code == 400 and expected in " ".join(response.json()[field])
    assert rules_of(alpha) == [] and changes_of(alpha) == []


def test_short_rules_need_the_confirmation_on_update_too(alpha, api_as):
    rule = add_rule(alpha, modality="MR", days=90)
    client = api_as(alpha)
    refused = client.patch(
        f"/api/v1/retention-rules/{rule.pk}/", {"days": 5}, content_type="application/json"
    )
    assert refused.status_code == 400 and rules_of(alpha)[0].days == 90
    accepted = client.patch(
        f"/api/v1/retention-rules/{rule.pk}/",
        {"days": 5, "confirm_short": True},
        content_type="application/json",
    )
    assert accepted.status_code == 200 and rules_of(alpha)[0].days == 5


def test_dry_run_validates_the_unsaved_rule(alpha, api_as):
    response = api_as(alpha).post(
        "/api/v1/retention-rules/dry-run/",
        {"modality": "ct", "days": 0},
        content_type="application/json",
    )
    assert response.status_code == 400 and set(response.json()) == {"modality", "days"}


def test_a_rule_beyond_a_century_is_refused_not_a_server_error(alpha, api_as):
    for path in ("/api/v1/retention-rules/dry-run/", "/api/v1/retention-rules/"):
        response = api_as(alpha).post(
            path, {"modality": "CT", "days": 10**40}, content_type="application/json"
        )
        assert response.status_code == 400
        assert "36525" in response.json()["days"][0]
    assert rules_of(alpha) == []


def test_read_tokens_read_but_do_not_write(alpha, api_as):
    client = api_as(alpha, Role.ADMIN, scope="read")
    assert client.get("/api/v1/settings/").status_code == 200
    response = client.patch(
        "/api/v1/settings/", {"timezone": "Europe/Oslo"}, content_type="application/json"
    )
    assert response.status_code == 403 and settings_of(alpha).timezone == "UTC"
    assert (
        client.post(
            "/api/v1/nodes/",
            {"ae_title": "X1", "host": "10.0.0.1", "port": 104},
            content_type="application/json",
        ).status_code
        == 403
    )
    assert nodes_of(alpha) == []


def test_api_history_of_settings_names_the_token_user(alpha, make_user, api_as):
    api_as(alpha).patch(
        "/api/v1/settings/", {"require_admin_2fa": True}, content_type="application/json"
    )
    [change] = changes_of(alpha)
    assert change.actor is not None and change.actor_name == change.actor.username
    admin = make_user(alpha, username="second-admin")
    with schema_context(alpha.schema_name):
        settings_update(tenant=alpha, actor=admin, require_admin_2fa=False)
    assert [c.actor_name for c in changes_of(alpha)][-1] == "second-admin"
