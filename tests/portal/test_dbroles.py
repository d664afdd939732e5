"""The processes' database role owns nothing: it cannot rewrite the append-only tables, switch
their triggers off, or create and drop schemas except through the owner's functions."""

import os
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django_tenants.utils import schema_context
from psycopg import sql

from audit.services import audit_record
from portal import dbroles
from tests.conftest import owner_role

# Every append-only table, with the schema it lives in ("tenant": each tenant's own).
APPEND_ONLY = [
    ("tenant", "audit_auditevent", "audit_auditevent_append_only"),
    ("tenant", "audit_auditseal", "audit_auditseal_append_only"),
    ("tenant", "configuration_settingchange", "configuration_settingchange_append_only"),
    ("public", "tenants_tenantevent", "tenants_tenantevent_append_only"),
]


@pytest.fixture(autouse=True)
def _split() -> Iterator[None]:
    """These tests need the two roles; `make test` (embedded PostgreSQL) always has them."""
    if dbroles.owner_settings() is None:
        reason = "DATABASE_OWNER_URL is not set: one database role does both jobs"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    yield


def refused(statement: str, params: list[object] | None = None) -> str:
    """Run `statement` in a savepoint; return PostgreSQL's refusal, or fail if it ran."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement, params)
    except DatabaseError as error:
        return str(error)
    pytest.fail(f"the application role was allowed: {statement}")


def test_the_processes_role_owns_nothing_and_may_create_nothing(alpha):
    role = dbroles.app_role()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_user, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles "
            "WHERE rolname = current_user"
        )
        assert cursor.fetchone() == (role, False, False, False)
        for catalogue, owner in (
            ("pg_class", "relowner"),
            ("pg_namespace", "nspowner"),
            ("pg_proc", "proowner"),
            ("pg_type", "typowner"),
        ):
            cursor.execute(
                f"SELECT count(*) FROM {catalogue} WHERE {owner} = (SELECT oid FROM pg_roles "
                "WHERE rolname = current_user)"
            )
            assert cursor.fetchone()[0] == 0, catalogue
        cursor.execute("SELECT has_database_privilege(current_database(), 'CREATE')")
        assert cursor.fetchone()[0] is False
    assert not dbroles.owns_tables()
    assert "permission denied" in refused("CREATE SCHEMA t_sneaky")
    assert "permission denied" in refused("CREATE TABLE public.sneaky (id int)")
    assert "permission denied" in refused(f"CREATE TABLE {alpha.schema_name}.sneaky (id int)")
    assert "permission denied" in refused(
        f"CREATE FUNCTION {alpha.schema_name}.f() RETURNS int LANGUAGE sql AS 'SELECT 1'"
    )


@pytest.mark.parametrize(("where", "table", "trigger"), APPEND_ONLY)
def test_append_only_tables_refuse_every_rewrite_by_the_processes_role(
    alpha, where, table, trigger
):
    schema = alpha.schema_name if where == "tenant" else "public"
    with schema_context(alpha.schema_name):
        audit_record(action="test.roles", actor_name="someone")  # a row to aim at
    qualified = f"{schema}.{table}"
    for statement in (
        f"UPDATE {qualified} SET id = id",
        f"DELETE FROM {qualified}",
        f"TRUNCATE {qualified}",
    ):
        assert "permission denied" in refused(statement), statement
    for statement in (
        f"ALTER TABLE {qualified} DISABLE TRIGGER USER",
        f"ALTER TABLE {qualified} DISABLE TRIGGER {trigger}",
        f"DROP TRIGGER {trigger} ON {qualified}",
        f"ALTER TABLE {qualified} ADD COLUMN forged text",
        f"ALTER TABLE {qualified} OWNER TO CURRENT_USER",
        f"DROP TABLE {qualified}",
    ):
        assert "must be owner" in refused(statement), statement
    # Nor can it swap the trigger's function for one that lets everything through.
    assert f"permission denied for schema {schema}" in refused(
        f"CREATE OR REPLACE FUNCTION {schema}.{trigger}() RETURNS trigger LANGUAGE plpgsql "
        "AS 'BEGIN RETURN NEW; END'"
    )
    # What it may do: read and append.
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {qualified}")
        assert cursor.fetchone()[0] >= 0


def test_the_owner_is_stopped_by_the_trigger_all_the_same(alpha):
    with schema_context(alpha.schema_name):
        audit_record(action="test.roles", actor_name="someone")
        with owner_role():
            assert "append-only" in refused("UPDATE audit_auditevent SET action = 'forged'")
            assert "append-only" in refused("DELETE FROM audit_auditevent")


def test_ordinary_tables_are_read_and_written_in_every_schema(alpha, new_tenant):
    fresh = new_tenant("roles-fresh").tenant  # cloned by the processes' role, via the owner
    for tenant in (alpha, fresh):
        with schema_context(tenant.schema_name), connection.cursor() as cursor:
            cursor.execute(
                "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = %s",
                [tenant.schema_name],
            )
            assert cursor.fetchone()[0] == dbroles.owner_settings()["USER"]
            cursor.execute("UPDATE django_content_type SET model = model")
            cursor.execute("DELETE FROM accounts_apitoken")
            row = audit_record(action="test.roles", actor_name="someone")
            assert row.pk
            assert "permission denied" in refused("DELETE FROM audit_auditevent")


def test_schemas_are_dropped_only_for_a_purged_tenant_and_never_public(alpha):
    for name in (alpha.schema_name, "public", settings.PORTAL_TEMPLATE_SCHEMA, "pg_catalog"):
        assert "not the schema of a purged tenant" in refused(
            "SELECT public.portal_drop_schema(%s)", [name]
        )


def test_the_clone_function_takes_only_new_tenant_schema_names(db):
    template = settings.PORTAL_TEMPLATE_SCHEMA
    for name in ("public", "pg_sneaky", "information_schema", "T_Upper", "a; DROP SCHEMA x", ""):
        assert "is not a tenant schema name" in refused(
            "SELECT public.portal_clone_schema(%s, %s)", [template, name]
        ), name
    assert "no schema" in refused("SELECT public.portal_clone_schema(%s, %s)", ["nope", "t_x"])
    # The processes' role cannot grant itself (or anyone) rights on other schemas.
    assert "permission denied" in refused(
        "SELECT public.portal_app_grants(%s, current_user)", ["public"]
    )


def test_migrate_portal_gives_back_the_rights_a_schema_lost(alpha):
    role = dbroles.app_role()
    revoke = sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(
        sql.Identifier(alpha.schema_name), sql.Identifier(role)
    )
    with owner_role(), connection.cursor() as cursor:
        cursor.execute(revoke.as_string(cursor.connection))
    assert dbroles.schemas_without_grants(role, [alpha.schema_name]) == [alpha.schema_name]
    assert "permission denied" in refused(
        f"SELECT count(*) FROM {alpha.schema_name}.audit_auditevent"
    )
    with owner_role():
        call_command("migrate_portal", verbosity=0)
    assert dbroles.schemas_without_grants(role, [alpha.schema_name]) == []
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {alpha.schema_name}.audit_auditevent")


def test_an_import_without_the_owner_role_says_what_it_needs(db, settings, tmp_path):
    """`tenant import` in a process that has only the application role (DATABASE_OWNER_URL
    missing, e.g. the web container) is refused with the reason, before anything is made."""
    from tenants.backup import BackupError, tenant_import

    settings.PORTAL_DATABASE_OWNER = None
    with pytest.raises(BackupError, match="set DATABASE_OWNER_URL"):
        tenant_import(source=tmp_path, slug="no-owner", actor="tests")
