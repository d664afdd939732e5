"""Remote nodes and retention rules from the /settings/ pages: validated, versioned, audited."""

import re

import pytest
from django_tenants.utils import schema_context

from configuration.models import SINGLETON_ID, RemoteNode, TenantSettings
from configuration.selectors import node_is_allowed, retention_preview
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

NODE = {"ae_title": "CT_SCANNER", "host": "10.20.30.40", "port": "104", "description": "CT 1"}


def test_adding_a_node_lists_it_and_versions_each_field(alpha, alpha_admin, alpha_admin_client):
    form = alpha_admin_client.get("/settings/nodes/new/").content.decode()
    assert "autofocus" in form
    response = alpha_admin_client.post(
        "/settings/nodes/new/", {**NODE, "ae_title": " CT_SCANNER ", "host": "10.20.30.40 "}
    )
    assert response.status_code == 302 and response["Location"].endswith("/settings/#nodes")
    [node] = nodes_of(alpha)
    assert (node.ae_title, node.host, node.port, node.description) == (
        "CT_SCANNER",
        "10.20.30.40",
        104,
        "CT 1",
    )
    assert [
        (c.subject, c.subject_id, c.field, c.old_value, c.new_value) for c in changes_of(alpha)
    ] == [
        ("node", node.pk, "ae_title", None, "CT_SCANNER"),
        ("node", node.pk, "host", None, "10.20.30.40"),
        ("node", node.pk, "port", None, 104),
        ("node", node.pk, "description", None, "CT 1"),
        ("node", node.pk, "tls_certificate_sha256", None, ""),
    ]
    [event] = audit_of(alpha, "node.create")
    assert event.actor == alpha_admin and event.object_id == str(node.pk)
    page = alpha_admin_client.get("/settings/").content.decode()
    assert "CT_SCANNER" in page and "Not tested yet" in page and "Test (C-ECHO)" in page


@pytest.mark.parametrize(
    ("values", "field", "expected"),
    [
        ({"ae_title": "BAD\\AE"}, "ae_title", "backslash"),
        ({"ae_title": "X" * 17}, "ae_title", "at most 16"),
        ({"ae_title": "    "}, "ae_title", "cannot be empty"),
        ({"host": "not a host"}, "host", "IP address or a host name"),
        ({"host": "300.1.1.1"}, "host", "IP address or a host name"),
        ({"port": "0"}, "port", "greater than or equal to 1"),
        ({"port": "65536"}, "port", "less than or equal to 65535"),
        ({"tls_certificate_sha256": "AB:CD"}, "tls_certificate_sha256", "64 hexadecimal"),
        ({"tls_certificate_sha256": "g" * 64}, "tls_certificate_sha256", "64 hexadecimal"),
    ],
)
def test_invalid_nodes_are_refused_and_nothing_is_saved(
    alpha, alpha_admin_client, values, field, expected
):
    response = alpha_admin_client.post("/settings/nodes/new/", {**NODE, **values})
    assert response.status_code == 200
    assert expected in " ".join(response.context["form"].errors[field])
    assert (
        nodes_of(alpha) == [] and changes_of(alpha) == [] and audit_of(alpha, "node.create") == []
    )


def test_the_same_address_cannot_be_listed_twice(alpha, alpha_admin_client):
    add_node(alpha, ae_title="CT_SCANNER", host="10.20.30.40", port=104)
    response = alpha_admin_client.post("/settings/nodes/new/", NODE)
    assert "already listed" in " ".join(response.context["form"].non_field_errors())
    assert len(nodes_of(alpha)) == 1 and changes_of(alpha) == []
    # Another port of the same host is another node.
    alpha_admin_client.post("/settings/nodes/new/", {**NODE, "port": "11112"})
    assert len(nodes_of(alpha)) == 2


def test_editing_a_node_versions_the_changed_fields_and_forgets_its_echo(alpha, alpha_admin_client):
    node = add_node(alpha, last_echo_ok=True, last_echo_message="fine")
    with schema_context(alpha.schema_name):
        RemoteNode.objects.filter(pk=node.pk).update(last_echo_at="2026-01-01T00:00Z")
    page = alpha_admin_client.get(f"/settings/nodes/{node.pk}/").content.decode()
    assert 'value="10.0.0.5"' in page
    alpha_admin_client.post(
        f"/settings/nodes/{node.pk}/",
        {"ae_title": "CT1", "host": "CT1.Radiology.Example", "port": "104", "description": ""},
    )
    [saved] = nodes_of(alpha)
    assert saved.host == "ct1.radiology.example"
    assert saved.last_echo_at is None and saved.last_echo_ok is None
    assert [(c.field, c.old_value, c.new_value) for c in changes_of(alpha)] == [
        ("host", "10.0.0.5", "ct1.radiology.example")
    ]
    assert audit_of(alpha, "node.update")[0].details["changes"]["host"][1] == (
        "ct1.radiology.example"
    )


def test_deleting_a_node_asks_first_then_versions_and_audits(alpha, alpha_admin_client):
    node = add_node(alpha)
    confirm = alpha_admin_client.get(f"/settings/nodes/{node.pk}/delete/").content.decode()
    assert "Remove remote node" in confirm and nodes_of(alpha) == [node]
    alpha_admin_client.post(f"/settings/nodes/{node.pk}/delete/")
    assert nodes_of(alpha) == []
    assert {(c.field, c.new_value) for c in changes_of(alpha)} == {
        ("ae_title", None),
        ("host", None),
        ("port", None),
        ("description", None),
        ("tls_certificate_sha256", None),
    }
    assert audit_of(alpha, "node.delete")[0].details["ae_title"] == "CT1"


def test_only_listed_nodes_are_allowed_when_the_policy_says_so(alpha, alpha_admin):
    add_node(alpha, ae_title="CT1", host="10.0.0.5")
    add_node(alpha, ae_title="MR1", host="localhost")
    with schema_context(alpha.schema_name):
        assert node_is_allowed(calling_ae="ANYONE", address="192.0.2.1")
        settings_update(tenant=alpha, actor=alpha_admin, require_known_nodes=True)
        assert node_is_allowed(calling_ae="CT1", address="10.0.0.5")
        assert node_is_allowed(calling_ae="MR1", address="127.0.0.1")
        assert not node_is_allowed(calling_ae="CT1", address="10.0.0.6")
        assert not node_is_allowed(calling_ae="MR1", address="10.0.0.5")


def test_a_node_pinned_to_a_certificate_is_allowed_only_with_it(alpha, alpha_admin_client):
    fingerprint = "0123456789abcdef" * 4
    written = ":".join(fingerprint.upper()[i : i + 2] for i in range(0, 64, 2))  # openssl's
    response = alpha_admin_client.post(
        "/settings/nodes/new/", {**NODE, "tls_certificate_sha256": f" {written} "}
    )
    assert response.status_code == 302
    [node] = nodes_of(alpha)
    assert node.tls_certificate_sha256 == fingerprint
    with schema_context(alpha.schema_name):
        TenantSettings.objects.filter(pk=SINGLETON_ID).update(require_known_nodes=True)
        peer = {"calling_ae": "CT_SCANNER", "address": "10.20.30.40"}
        assert node_is_allowed(**peer, certificate=fingerprint)
        assert not node_is_allowed(**peer)
        assert not node_is_allowed(**peer, certificate="f" * 64)
    # Removing the pin recognises the node by title and address again, and forgets its echo.
    alpha_admin_client.post(f"/settings/nodes/{node.pk}/", {**NODE, "tls_certificate_sha256": ""})
    with schema_context(alpha.schema_name):
        assert node_is_allowed(calling_ae="CT_SCANNER", address="10.20.30.40")


# Retention rules -------------------------------------------------------------------------

RULE = {"modality": "CT", "days": "365", "enabled": "on"}


def dry_run(client, url: str, **values: str):  # type: ignore[no-untyped-def]
    return client.post(url, {**RULE, **values, "action": "preview"})


def token_of(response) -> str:  # type: ignore[no-untyped-def]
    match = re.search(r'name="preview_token" value="([^"]+)"', response.content.decode())
    assert match, "the dry run offers no save step"
    return match.group(1)


def test_a_rule_is_saved_only_after_its_dry_run(alpha, alpha_admin, alpha_admin_client):
    first = dry_run(alpha_admin_client, "/settings/retention/new/")
    page = first.content.decode()
    assert "This rule would delete 0 studies, 0\xa0bytes (0 bytes), tonight." in page
    assert "Save rule" in page and rules_of(alpha) == []
    saved = alpha_admin_client.post(
        "/settings/retention/new/", {**RULE, "action": "save", "preview_token": token_of(first)}
    )
    assert saved.status_code == 302 and saved["Location"].endswith("/settings/#retention")
    [rule] = rules_of(alpha)
    assert (rule.modality, rule.days, rule.enabled) == ("CT", 365, True)
    assert [(c.field, c.new_value) for c in changes_of(alpha)] == [
        ("modality", "CT"),
        ("days", 365),
        ("enabled", True),
    ]
    [event] = audit_of(alpha, "retention.create")
    assert event.actor == alpha_admin
    assert event.details["would_delete_studies"] == 0 and event.details["days"] == 365
    page = alpha_admin_client.get("/settings/").content.decode()
    assert "retention job is switched off" in page  # default: rules wait for the job switch


def test_saving_without_a_dry_run_or_after_changing_the_rule_shows_a_dry_run(
    alpha, alpha_admin_client
):
    skipped = alpha_admin_client.post("/settings/retention/new/", {**RULE, "action": "save"})
    assert skipped.status_code == 200 and "This rule would delete" in skipped.content.decode()
    forged = alpha_admin_client.post(
        "/settings/retention/new/", {**RULE, "action": "save", "preview_token": "forged"}
    )
    assert forged.status_code == 200
    token = token_of(dry_run(alpha_admin_client, "/settings/retention/new/", days="400"))
    changed = alpha_admin_client.post(
        "/settings/retention/new/", {**RULE, "action": "save", "preview_token": token}
    )
    assert "changed since its dry run" in changed.content.decode()
    assert rules_of(alpha) == [] and changes_of(alpha) == []


def test_rules_under_30_days_need_the_i_understand_box(alpha, alpha_admin_client):
    refused = dry_run(alpha_admin_client, "/settings/retention/new/", days="7")
    assert "tick “I understand”" in " ".join(refused.context["form"].errors["confirm_short"])
    assert "preview_token" not in refused.content.decode()
    confirmed = dry_run(
        alpha_admin_client, "/settings/retention/new/", days="7", confirm_short="on"
    )
    alpha_admin_client.post(
        "/settings/retention/new/",
        {
            **RULE,
            "days": "7",
            "confirm_short": "on",
            "action": "save",
            "preview_token": token_of(confirmed),
        },
    )
    assert [(r.modality, r.days) for r in rules_of(alpha)] == [("CT", 7)]


@pytest.mark.parametrize(
    ("values", "field", "expected"),
    [
        ({"modality": "ct"}, "modality", "uppercase, e.g. CT"),
        ({"modality": "C"}, "modality", "DICOM modality code"),
        ({"modality": "C T"}, "modality", "DICOM modality code"),
        ({"days": "0"}, "days", "greater than or equal to 1"),
        ({"days": "-5"}, "days", "greater than or equal to 1"),
        ({"days": "ten"}, "days", "whole number"),
        ({"days": "36526"}, "days", "less than or equal to 36525"),
        ({"days": "9" * 40}, "days", "less than or equal to 36525"),
    ],
)
def test_invalid_rules_are_refused_before_the_dry_run(
    alpha, alpha_admin_client, values, field, expected
):
    response = dry_run(alpha_admin_client, "/settings/retention/new/", **values)
    assert expected in " ".join(response.context["form"].errors[field])
    assert "preview_token" not in response.content.decode()
    assert rules_of(alpha) == [] and changes_of(alpha) == []


def test_one_rule_per_modality(alpha, alpha_admin_client):
    add_rule(alpha, modality="CT")
    response = dry_run(alpha_admin_client, "/settings/retention/new/")
    assert "exists already" in " ".join(response.context["form"].errors["modality"])
    assert len(rules_of(alpha)) == 1


def test_editing_a_rule_needs_a_dry_run_and_versions_the_change(alpha, alpha_admin_client):
    rule = add_rule(alpha, modality="*", days=3650)
    url = f"/settings/retention/{rule.pk}/"
    assert 'value="3650"' in alpha_admin_client.get(url).content.decode()
    first = alpha_admin_client.post(url, {"modality": "*", "days": "1825", "action": "preview"})
    assert rules_of(alpha)[0].days == 3650
    alpha_admin_client.post(
        url, {"modality": "*", "days": "1825", "action": "save", "preview_token": token_of(first)}
    )
    [saved] = rules_of(alpha)
    assert (saved.days, saved.enabled) == (1825, False)
    assert [(c.field, c.old_value, c.new_value) for c in changes_of(alpha)] == [
        ("days", 3650, 1825),
        ("enabled", True, False),
    ]
    assert audit_of(alpha, "retention.update")[0].details["changes"]["days"] == [3650, 1825]


def test_a_dry_run_token_of_one_rule_does_not_save_another(alpha, alpha_admin_client):
    ct = add_rule(alpha, modality="CT", days=100)
    mr = add_rule(alpha, modality="MR", days=100)
    values = {"modality": "MR", "days": "50", "enabled": "on"}
    token = token_of(
        alpha_admin_client.post(f"/settings/retention/{mr.pk}/", {**values, "action": "preview"})
    )
    alpha_admin_client.post(
        f"/settings/retention/{ct.pk}/",
        {**values, "modality": "CT", "action": "save", "preview_token": token},
    )
    assert {r.modality: r.days for r in rules_of(alpha)} == {"CT": 100, "MR": 100}


def test_deleting_a_rule_asks_first(alpha, alpha_admin_client):
    rule = add_rule(alpha)
    assert (
        "Nothing is deleted by removing the rule"
        in alpha_admin_client.get(f"/settings/retention/{rule.pk}/delete/").content.decode()
    )
    alpha_admin_client.post(f"/settings/retention/{rule.pk}/delete/")
    assert rules_of(alpha) == []
    assert {(c.field, c.old_value, c.new_value) for c in changes_of(alpha)} == {
        ("modality", "CT", None),
        ("days", 365, None),
        ("enabled", True, None),
    }
    assert audit_of(alpha, "retention.delete")[0].details["modality"] == "CT"


def test_retention_preview_counts_only_old_enough_studies_of_the_modality(alpha):
    from datetime import timedelta

    from django.utils import timezone

    from studies.models import Patient, Study

    with schema_context(alpha.schema_name):
        patient = Patient.objects.create(patient_id="P1", name="DOE^JANE")
        now = timezone.now()
        for uid, modalities, age_days, size in [
            ("1.2.3.1", ["CT"], 400, 1000),
            ("1.2.3.2", ["CT", "SR"], 10, 2000),
            ("1.2.3.3", ["MR"], 400, 4000),
        ]:
            study = Study.objects.create(
                study_instance_uid=uid,
                patient_record=patient,
                modalities=modalities,
                size_bytes=size,
            )
            Study.objects.filter(pk=study.pk).update(received_at=now - timedelta(days=age_days))
        ct = retention_preview(modality="CT", days=365)
        every = retention_preview(modality="*", days=365)
        none = retention_preview(modality="CT", days=401)
    assert (ct.studies, ct.bytes, ct.available) == (1, 1000, True)
    assert (every.studies, every.bytes) == (2, 5000)
    assert none.studies == 0
    assert ct.summary == "This rule would delete 1 study, 1000\xa0bytes (1000 bytes), tonight."


def test_job_switch_warning_disappears_once_retention_is_on(alpha, alpha_admin, alpha_admin_client):
    add_rule(alpha)
    with schema_context(alpha.schema_name):
        settings_update(tenant=alpha, actor=alpha_admin, job_retention=True)
    assert settings_of(alpha).job_retention
    assert (
        "retention job is switched off" not in alpha_admin_client.get("/settings/").content.decode()
    )
