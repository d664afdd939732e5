"""The audit log: one row per event, filters, CSV, API, append-only in the database."""

import csv
import io
import json
from contextlib import nullcontext

import pytest
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django_tenants.utils import schema_context

from accounts.models import Role
from accounts.services import api_token_create
from audit.models import AuditEvent
from audit.services import audit_record
from tests.conftest import PASSWORD, logged_in, owner_role, tenant_client


def events(tenant, **filters):
    with schema_context(tenant.schema_name):
        return list(AuditEvent.objects.filter(**filters).order_by("id"))


def test_login_success_failure_and_logout_leave_one_row_each(alpha, beta, alpha_admin):
    client = tenant_client(alpha, REMOTE_ADDR="192.0.2.10")
    client.post("/account/login/", {"username": alpha_admin.username, "password": "wrong"})
    logged_in(client, alpha_admin.username)
    client.post("/account/logout/")

    rows = events(alpha, actor_name=alpha_admin.username)
    assert [(e.action, e.outcome) for e in rows] == [
        ("login.failure", "failure"),
        ("login.success", "success"),
        ("logout", "success"),
    ]
    assert {e.source_address for e in rows} == {"192.0.2.10"}
    assert rows[0].actor is None and rows[1].actor == alpha_admin
    assert rows[1].object_type == "user" and rows[1].object_id == str(alpha_admin.pk)
    assert events(beta, actor_name=alpha_admin.username) == []  # written in alpha only


def test_audit_rows_cannot_be_changed_or_deleted_by_the_apps_database_role(alpha):
    """Refused twice over: the processes' role lacks the privilege, and the trigger stops even
    the owner (tests/portal/test_dbroles.py covers ALTER and DROP TRIGGER)."""
    with schema_context(alpha.schema_name):
        row = audit_record(action="test.event", actor_name="someone")
        with connection.cursor() as cursor:  # settle the deferred FK checks of the insert
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for role, refusal in ((nullcontext(), "permission denied"), (owner_role(), "append-only")):
            with role:
                for statement in (
                    "UPDATE audit_auditevent SET action = 'forged' WHERE id = %s",
                    "DELETE FROM audit_auditevent WHERE id = %s",
                    "TRUNCATE audit_auditevent",
                ):
                    with (
                        pytest.raises(DatabaseError, match=refusal),
                        transaction.atomic(),
                        connection.cursor() as cursor,
                    ):
                        cursor.execute(statement, [row.pk] if "%s" in statement else None)
        assert AuditEvent.objects.get(pk=row.pk).action == "test.event"


def test_client_address_behind_a_trusted_proxy_is_the_forwarded_one(alpha, alpha_admin):
    client = tenant_client(alpha, REMOTE_ADDR="10.9.8.7")  # the trusted proxy of the tests
    client.post(
        "/account/login/",
        {"username": alpha_admin.username, "password": "x"},
        HTTP_X_FORWARDED_FOR="198.51.100.7, 10.9.8.7",
    )
    untrusted = tenant_client(alpha, REMOTE_ADDR="192.0.2.99")
    untrusted.post(
        "/account/login/",
        {"username": alpha_admin.username, "password": "x"},
        HTTP_X_FORWARDED_FOR="203.0.113.5",
    )
    addresses = [e.source_address for e in events(alpha, action="login.failure")]
    assert addresses[-2:] == ["198.51.100.7", "192.0.2.99"]


@pytest.fixture
def seeded(alpha, beta):
    with schema_context(alpha.schema_name):
        audit_record(
            action="user.invite",
            actor_name="ann",
            object_type="user",
            object_id="7",
            details={"role": "viewer"},
        )
        audit_record(
            action="medium.create", actor_name="ann", object_type="storagemedium", object_id="2"
        )
        audit_record(
            action="user.deactivate",
            actor_name="bob",
            object_type="user",
            object_id="7",
            outcome="denied",
        )
        audit_record(
            action="settings.update",
            actor_name="mallory",
            details={"note": '=HYPERLINK("http://evil")'},
        )
    with schema_context(beta.schema_name):
        audit_record(action="user.invite", actor_name="beta-secret", object_type="user")


def test_page_filters_by_user_action_object_and_outcome(seeded, alpha_admin_client):
    def shown(**query):
        page = alpha_admin_client.get("/audit/", query)
        assert page.status_code == 200
        return [
            (e.action, e.actor_name)
            for e in page.context["events"]
            if e.actor_name in {"ann", "bob", "mallory", "beta-secret"}
        ]

    assert shown(actor="ann") == [("medium.create", "ann"), ("user.invite", "ann")]
    assert shown(action="user") == [("user.deactivate", "bob"), ("user.invite", "ann")]
    assert shown(object_type="user", object_id="7") == [
        ("user.deactivate", "bob"),
        ("user.invite", "ann"),
    ]
    assert shown(outcome="denied") == [("user.deactivate", "bob")]
    assert ("user.invite", "beta-secret") not in shown()
    bad = alpha_admin_client.get("/audit/", {"since": "2030-01-02", "until": "2030-01-01"})
    assert "The end date lies before the start date." in bad.content.decode()
    # A rejected filter lists nothing (not the whole log) and says so; the export refuses.
    assert list(bad.context["events"]) == []
    assert "The filter was not applied" in bad.content.decode()
    for query in ({"since": "2030-01-02", "until": "2030-01-01"}, {"since": "not a date"}):
        export = alpha_admin_client.get("/audit/export.csv", query)
        assert export.status_code == 400
        assert "nothing was exported" in export.content.decode()


def test_pages_past_the_end_or_not_numbers_show_the_nearest_page(seeded, alpha_admin_client):
    last = alpha_admin_client.get("/audit/", {"page": "999"})
    assert last.status_code == 200
    assert last.context["page_obj"].number == last.context["paginator"].num_pages
    first = alpha_admin_client.get("/audit/", {"page": "abc"})
    assert first.status_code == 200 and first.context["page_obj"].number == 1


def test_csv_export_follows_the_filters_and_is_spreadsheet_safe(seeded, alpha, alpha_admin_client):
    response = alpha_admin_client.get("/audit/export.csv", {"actor": "mallory"})
    assert response["Content-Type"] == "text/csv"
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][:4] == ["time", "user", "source_address", "action"]
    assert [r[3] for r in rows[1:]] == ["settings.update"]
    assert json.loads(rows[1][7]) == {"note": '=HYPERLINK("http://evil")'}
    assert events(alpha, action="audit.export")[-1].details["rows"] == 1

    # A username typed by an attacker at the login form cannot become a spreadsheet formula.
    tenant_client(alpha).post(
        "/account/login/", {"username": '=HYPERLINK("http://x")', "password": "x"}
    )
    response = alpha_admin_client.get("/audit/export.csv", {"action": "login.failure"})
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert '\'=HYPERLINK("http://x")' in [r[1] for r in rows]


@pytest.mark.parametrize(
    ("role", "allowed"),
    [(Role.ADMIN, True), (Role.AUDITOR, True), (Role.OPERATOR, False), (Role.VIEWER, False)],
)
def test_who_may_read_the_log(seeded, alpha, make_user, role, allowed):
    user = make_user(alpha, role=role)
    client = logged_in(tenant_client(alpha), user.username)
    assert (client.get("/audit/").status_code == 200) is allowed
    assert (client.get("/audit/export.csv").status_code == 200) is allowed
    with schema_context(alpha.schema_name):
        _, raw = api_token_create(user=user, name="t")
    api = tenant_client(alpha, HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert (api.get("/api/v1/audit/").status_code == 200) is allowed


def test_anonymous_and_other_tenants_cannot_read_it(seeded, alpha, beta, make_user):
    assert tenant_client(alpha).get("/audit/").status_code == 302
    assert tenant_client(alpha).get("/api/v1/audit/").status_code in {401, 403}
    beta_admin = make_user(beta, username="beta-admin")
    with schema_context(beta.schema_name):
        _, raw = api_token_create(user=beta_admin, name="t")
    intruder = tenant_client(alpha, HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert intruder.get("/api/v1/audit/").status_code == 401
    own = tenant_client(beta, HTTP_AUTHORIZATION=f"Bearer {raw}").get("/api/v1/audit/").json()
    assert {e["actor_name"] for e in own["results"]} >= {"beta-secret"}
    assert not {"ann", "bob", "mallory"} & {e["actor_name"] for e in own["results"]}


def test_api_is_read_only_and_filters(seeded, alpha, alpha_admin):
    with schema_context(alpha.schema_name):
        _, raw = api_token_create(user=alpha_admin, name="t")
        row = AuditEvent.objects.filter(actor_name="ann").first()
    api = tenant_client(alpha, HTTP_AUTHORIZATION=f"Bearer {raw}")
    body = api.get("/api/v1/audit/", {"action": "user", "actor": "ANN"}).json()
    assert [e["action"] for e in body["results"]] == ["user.invite"]
    assert api.delete(f"/api/v1/audit/{row.pk}/").status_code == 405
    assert (
        api.patch(
            f"/api/v1/audit/{row.pk}/", {"action": "x"}, content_type="application/json"
        ).status_code
        == 405
    )
    assert (
        api.post("/api/v1/audit/", {"action": "x"}, content_type="application/json").status_code
        == 405
    )


def test_empty_log_says_what_will_appear(alpha, alpha_admin_client):
    page = alpha_admin_client.get("/audit/", {"actor": "nobody-at-all"})
    assert "No events match" in page.content.decode()


def test_superadmin_sees_counts_not_contents(seeded, superadmin_client, alpha):
    page = superadmin_client.get(f"/tenants/{alpha.slug}/").content.decode()
    assert "Audit events" in page
    assert "mallory" not in page and "HYPERLINK" not in page
    assert superadmin_client.get("/audit/").status_code == 404  # no such page for the platform


def test_public_login_failures_are_audited_in_public(db, superadmin):
    Client(HTTP_HOST="localhost").post(
        "/account/login/", {"username": superadmin.username, "password": "nope"}
    )
    assert AuditEvent.objects.filter(
        action="login.failure", actor_name=superadmin.username
    ).exists()
    Client(HTTP_HOST="localhost").post(
        "/account/login/", {"username": superadmin.username, "password": PASSWORD}
    )
    assert AuditEvent.objects.filter(action="login.success", actor=superadmin).exists()


def test_rows_name_their_objects_with_links_and_show_details_as_pairs(
    alpha, alpha_admin, alpha_admin_client, make_user, django_assert_max_num_queries
):
    colleague = make_user(alpha, username="colleague-named", role=Role.OPERATOR)
    with schema_context(alpha.schema_name):
        audit_record(action="user.invite", target=colleague, details={"role": "operator"})
        audit_record(
            action="study.delete",
            object_type="study",
            object_id="999999",
            details={"counts": {"series": 2}, "reason": "duplicate"},
        )
    with django_assert_max_num_queries(25):
        page = alpha_admin_client.get("/audit/").content.decode()
    assert f'<a href="/users/{colleague.pk}/">colleague-named</a>' in page
    assert "study 999999 (no longer exists)" in page
    assert "<dt>reason</dt><dd>duplicate</dd>" in page
    assert "<dt>counts</dt><dd>{&quot;series&quot;: 2}</dd>" in page
    assert "{'series'" not in page  # no Python reprs
