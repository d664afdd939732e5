"""The audit hash chain: seals over each tenant's rows, and `tenant audit-verify` naming the
first broken link when a row is changed, removed or slipped in behind the trigger's back."""

from datetime import timedelta
from io import StringIO
from itertools import pairwise

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django_tenants.utils import schema_context

from audit.chain import audit_seal, audit_verify
from audit.models import AuditEvent, AuditSeal
from audit.services import audit_record
from tests.conftest import owner_role


@pytest.fixture
def ripe_at_once(monkeypatch):
    """Rows are sealed as soon as they exist (in production: once SEAL_AFTER old)."""
    monkeypatch.setattr("audit.chain.SEAL_AFTER", timedelta(0))


def write_rows(tenant, count: int, action: str = "test.event") -> list[int]:
    with schema_context(tenant.schema_name):
        return [
            audit_record(action=action, actor_name="ann", details={"n": n}).pk for n in range(count)
        ]


def behind_the_trigger(tenant, sql: str, params: list) -> None:
    """What a role that owns the table can do: switch the append-only trigger off."""
    with owner_role(), schema_context(tenant.schema_name), connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no pending FK checks: ALTER needs it
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER USER")
        cursor.execute(sql, params)
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER USER")


def verify(tenant) -> str:
    out = StringIO()
    call_command("tenant", "audit-verify", tenant.slug, "--seal", stdout=out)
    return out.getvalue()


def test_sealed_rows_verify_and_young_rows_wait(alpha, monkeypatch):
    write_rows(alpha, 3)
    with schema_context(alpha.schema_name):
        assert audit_seal() == []  # younger than SEAL_AFTER: not sealed yet
        assert audit_verify().unsealed >= 3
    monkeypatch.setattr("audit.chain.SEAL_AFTER", timedelta(0))
    monkeypatch.setattr("audit.chain.SEAL_LIMIT", 2)
    out = verify(alpha)
    assert "the audit chain holds" in out and "0 events not sealed yet" in out
    with schema_context(alpha.schema_name):
        seals = list(AuditSeal.objects.order_by("last_event_id"))
        total = AuditEvent.objects.count()
    assert len(seals) == (total + 1) // 2  # links of at most SEAL_LIMIT rows
    assert seals[0].previous == "0" * 64
    assert all(b.previous == a.digest for a, b in pairwise(seals))
    # Sealing again finds nothing new; the seals are append-only like the rows.
    with schema_context(alpha.schema_name):
        assert audit_seal() == []
        with pytest.raises(DatabaseError, match="permission denied"), transaction.atomic():
            AuditSeal.objects.filter(pk=seals[0].pk).update(digest="f" * 64)
        with owner_role(), pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            AuditSeal.objects.filter(pk=seals[0].pk).update(digest="f" * 64)


def test_a_changed_row_breaks_its_link_and_only_in_its_tenant(alpha, beta, ripe_at_once):
    ids = write_rows(alpha, 4)
    write_rows(beta, 2)
    verify(alpha)
    verify(beta)
    behind_the_trigger(
        alpha,
        "UPDATE audit_auditevent SET actor_name = 'mallory' WHERE id = %s",
        [ids[2]],
    )
    with pytest.raises(CommandError, match="no longer matches its rows: a row changed"):
        verify(alpha)
    assert "the audit chain holds" in verify(beta)


def test_a_removed_row_and_a_slipped_in_row_are_named(alpha, ripe_at_once):
    ids = write_rows(alpha, 3)
    verify(alpha)
    behind_the_trigger(alpha, "DELETE FROM audit_auditevent WHERE id = %s", [ids[1]])
    with pytest.raises(CommandError, match=r"1 row\(s\) removed"):
        verify(alpha)
    behind_the_trigger(
        alpha,
        "INSERT INTO audit_auditevent (id, at, actor_name, action, object_type, object_id,"
        " outcome, details) VALUES (%s, now(), 'x', 'forged', '', '', 'success', '{}')",
        [ids[1]],
    )
    with pytest.raises(CommandError, match="a row changed"):
        verify(alpha)


def test_audit_verify_of_an_unknown_tenant_says_so(db):
    with pytest.raises(CommandError, match="no tenant with slug"):
        call_command("tenant", "audit-verify", "nobody-here")
