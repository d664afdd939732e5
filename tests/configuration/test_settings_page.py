"""/settings/ sections: saved, versioned field by field, audited; invalid input saves nothing."""

import copy
from contextlib import nullcontext

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django_tenants.utils import schema_context

from configuration.context_processors import branding
from configuration.models import SettingChange
from configuration.services import settings_update
from tenants.models import Tenant, TenantEvent
from tests.configuration.conftest import audit_of, changes_of, settings_of
from tests.conftest import owner_role


def post_section(client, section: str, **values):  # type: ignore[no-untyped-def]
    data = {"section": section, **{f"{section}-{key}": value for key, value in values.items()}}
    return client.post("/settings/", data)


def form_errors(response, section: str) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    return dict(response.context["forms"][section].errors)


def test_settings_page_shows_every_section_with_current_values(alpha, alpha_admin_client):
    page = alpha_admin_client.get("/settings/").content.decode()
    for heading in (
        "DICOM identity",
        "Remote DICOM nodes",
        "Retention rules",
        "Policies",
        "CORS origins for viewers",
        "Appearance and time zone",
        "Periodic jobs",
        "Recent changes",
    ):
        assert heading in page
    assert 'value="ALPHA"' in page and 'value="Alpha Hospital"' in page
    assert "No retention rules: every study is kept" in page
    assert "No remote nodes yet" in page


def test_appearance_change_is_saved_versioned_and_audited(alpha, alpha_admin, alpha_admin_client):
    response = post_section(
        alpha_admin_client, "appearance", accent_colour="#AA3300", timezone="Europe/Berlin"
    )
    assert response.status_code == 302 and response["Location"].endswith("/settings/#appearance")
    row = settings_of(alpha)
    assert (row.accent_colour, row.timezone) == ("#aa3300", "Europe/Berlin")
    changes = changes_of(alpha)
    assert [(c.field, c.old_value, c.new_value) for c in changes] == [
        ("accent_colour", "#1f6feb", "#aa3300"),
        ("timezone", "UTC", "Europe/Berlin"),
    ]
    assert {(c.actor_id, c.actor_name, c.subject) for c in changes} == {
        (alpha_admin.pk, "alice", "settings")
    }
    [event] = audit_of(alpha, "settings.update")
    assert event.actor == alpha_admin
    assert event.details["changes"]["timezone"] == ["UTC", "Europe/Berlin"]
    assert "Settings saved." in alpha_admin_client.get("/settings/").content.decode()


def test_saving_unchanged_values_records_nothing(alpha, alpha_admin_client):
    post_section(alpha_admin_client, "appearance", accent_colour="#1f6feb", timezone="UTC")
    assert changes_of(alpha) == [] and audit_of(alpha, "settings.update") == []


def test_only_changed_fields_are_versioned(alpha, alpha_admin_client):
    post_section(
        alpha_admin_client,
        "jobs",
        job_storage_usage="on",
        job_watermark_migration="on",
        job_retention="on",
        job_verification="on",
        job_node_echo="on",
    )
    assert [(c.field, c.old_value, c.new_value) for c in changes_of(alpha)] == [
        ("job_retention", False, True),
        ("job_quarantine_purge", True, False),
    ]
    row = settings_of(alpha)
    assert row.job_retention and not row.job_quarantine_purge and row.job_storage_usage


def test_policies_and_cors_sections(alpha, alpha_admin_client):
    post_section(
        alpha_admin_client,
        "cors",
        cors_origins="https://viewer.example.org\r\n\r\n HTTP://LOCALHOST:3000 \r\n",
    )
    # Last: once 2FA is required, this admin (who has none yet) is sent to set it up.
    post_section(
        alpha_admin_client,
        "policies",
        duplicate_policy="replace",
        patient_mismatch_policy="refuse",
        require_known_nodes="on",
        require_admin_2fa="on",
    )
    assert alpha_admin_client.get("/settings/")["Location"].endswith("/account/2fa/")
    row = settings_of(alpha)
    assert row.duplicate_policy == "replace" and row.require_known_nodes and row.require_admin_2fa
    assert row.patient_mismatch_policy == "refuse"
    assert row.cors_origins == ["https://viewer.example.org", "http://localhost:3000"]
    [cors] = changes_of(alpha, field="cors_origins")
    assert cors.old_value == [] and cors.new_value == row.cors_origins


@pytest.mark.parametrize(
    ("section", "values", "field", "expected"),
    [
        ("appearance", {"accent_colour": "red", "timezone": "UTC"}, "accent_colour", "#rrggbb"),
        (
            "appearance",
            {"accent_colour": "#112233", "timezone": "Mars/Base"},
            "timezone",
            "not a known time zone",
        ),
        ("cors", {"cors_origins": "https://ok.example\n*"}, "cors_origins", "Wildcards"),
        ("cors", {"cors_origins": "https://ok.example/path"}, "cors_origins", "no path"),
        (
            "cors",
            {"cors_origins": "https://a.example\nhttps://a.example"},
            "cors_origins",
            "listed once",
        ),
        ("policies", {"duplicate_policy": "merge"}, "duplicate_policy", "valid choice"),
        ("identity", {"display_name": "", "ae_title": "ALPHA"}, "display_name", "required"),
    ],
)
def test_invalid_values_save_nothing_and_say_why(
    alpha, alpha_admin_client, section, values, field, expected
):
    before = settings_of(alpha)
    response = post_section(alpha_admin_client, section, **values)
    assert response.status_code == 200
    assert expected in " ".join(form_errors(response, section)[field])
    assert "Nothing was saved" in response.content.decode()
    after = settings_of(alpha)
    assert [getattr(after, f.name) for f in after._meta.fields if f.name != "updated_at"] == [
        getattr(before, f.name) for f in before._meta.fields if f.name != "updated_at"
    ]
    assert Tenant.objects.get(pk=alpha.pk).name == "Alpha Hospital"
    assert changes_of(alpha) == [] and audit_of(alpha, "settings.update") == []


def test_one_bad_value_keeps_the_good_ones_of_the_same_request_unsaved(alpha, alpha_admin):
    with schema_context(alpha.schema_name), pytest.raises(ValidationError) as caught:
        settings_update(
            tenant=alpha, actor=alpha_admin, timezone="Europe/Paris", accent_colour="blue"
        )
    assert set(caught.value.message_dict) == {"accent_colour"}
    assert settings_of(alpha).timezone == "UTC" and changes_of(alpha) == []


def test_identity_change_updates_the_public_tenant_row_and_both_histories(
    alpha, alpha_admin, alpha_admin_client
):
    response = post_section(alpha_admin_client, "identity", display_name="Alpha Radiology")
    assert response.status_code == 302
    tenant = Tenant.objects.get(pk=alpha.pk)
    assert tenant.name == "Alpha Radiology"
    event = TenantEvent.objects.filter(tenant=tenant, action="update").latest("at")
    assert event.actor == "alice@alpha"
    assert event.details["changes"] == {"name": ["Alpha Hospital", "Alpha Radiology"]}
    assert [(c.field, c.old_value, c.new_value) for c in changes_of(alpha)] == [
        ("display_name", "Alpha Hospital", "Alpha Radiology"),
    ]
    assert len(audit_of(alpha, "settings.update")) == 1
    # The header of the next page shows the new name.
    assert "Alpha Radiology" in alpha_admin_client.get("/settings/").content.decode()


@pytest.mark.parametrize("wanted", ["BETA", "ALPHA2", ""])
def test_a_tenant_admin_cannot_move_the_ae_title(
    alpha, beta, alpha_admin, alpha_admin_client, wanted
):
    """The AE title routes DICOM: a tenant admin who released it would let another tenant
    claim it and receive this hospital's modality traffic. The page shows it, read-only."""
    page = alpha_admin_client.get("/settings/").content.decode()
    assert 'name="identity-ae_title"' in page and "disabled" in page
    assert "only the platform administrator" in page
    response = post_section(alpha_admin_client, "identity", display_name="X", ae_title=wanted)
    assert response.status_code == 302  # the name is saved; the posted title is ignored
    assert Tenant.objects.get(pk=alpha.pk).ae_title == "ALPHA"
    assert Tenant.objects.get(pk=beta.pk).ae_title == "BETA"
    with schema_context(alpha.schema_name), pytest.raises(ValidationError) as raised:
        settings_update(tenant=alpha, actor=alpha_admin, ae_title=wanted)
    assert "only the platform administrator" in " ".join(raised.value.message_dict["ae_title"])
    with schema_context(alpha.schema_name):  # sent back unchanged, as read: accepted
        settings_update(tenant=alpha, actor=alpha_admin, ae_title="ALPHA", timezone="UTC")


def test_history_page_lists_changes_newest_first_in_pages(
    alpha, beta, alpha_admin_client, make_user
):
    for zone in ("Europe/Berlin", "Europe/Paris", "Asia/Tokyo"):
        post_section(alpha_admin_client, "appearance", accent_colour="#1f6feb", timezone=zone)
    beta_admin = make_user(beta, username="bob")
    with schema_context(beta.schema_name):
        settings_update(tenant=beta, actor=beta_admin, timezone="America/Chicago")
    page = alpha_admin_client.get("/settings/history/").content.decode()
    rows = [page.index(f"<td>{zone}</td></tr>") for zone in ("Asia/Tokyo", "Europe/Paris")]
    assert rows[0] < rows[1] < page.index("<td>UTC</td><td>Europe/Berlin</td></tr>")
    assert "America/Chicago" not in page and "bob" not in page
    with schema_context(alpha.schema_name):
        for _ in range(60):
            SettingChange.objects.create(
                actor_name="script", subject="settings", field="timezone", new_value="UTC"
            )
    response = alpha_admin_client.get("/settings/history/?page=2")
    assert response.status_code == 200 and "Page 2 of 2 (63 in all)" in response.content.decode()


def test_settings_changes_cannot_be_rewritten(alpha, alpha_admin):
    from django.db import DatabaseError, connection, transaction

    with schema_context(alpha.schema_name):
        settings_update(tenant=alpha, actor=alpha_admin, timezone="Europe/Rome")
        change = SettingChange.objects.get()
        # The processes' role has no such privilege; the owner is stopped by the trigger.
        for role, refusal in ((nullcontext, "permission denied"), (owner_role, "append-only")):
            for statement in (
                "UPDATE configuration_settingchange SET new_value = '\"UTC\"' WHERE id = %s",
                "DELETE FROM configuration_settingchange WHERE id = %s",
            ):
                with (
                    role(),
                    pytest.raises(DatabaseError, match=refusal),
                    transaction.atomic(),
                    connection.cursor() as cursor,
                ):
                    cursor.execute(statement, [change.pk])
        assert SettingChange.objects.get().new_value == "Europe/Rome"


def test_header_accent_comes_from_the_tenants_own_settings(
    alpha, beta, alpha_admin, alpha_admin_client, make_user, settings
):
    templates = copy.deepcopy(django_settings.TEMPLATES)
    templates[0]["OPTIONS"]["context_processors"].append(
        "configuration.context_processors.branding"
    )
    settings.TEMPLATES = templates
    with schema_context(alpha.schema_name):
        settings_update(tenant=alpha, actor=alpha_admin, accent_colour="#aa0000")
    assert alpha_admin_client.get("/settings/").context["tenant_accent"] == "#aa0000"
    from tests.conftest import logged_in, tenant_client

    beta_client = logged_in(tenant_client(beta), make_user(beta).username)
    assert beta_client.get("/").context["tenant_accent"] == "#1f6feb"


def test_branding_is_empty_outside_a_tenant(alpha):
    class PublicRequest:
        tenant = None

    assert branding(PublicRequest()) == {}  # type: ignore[arg-type]
