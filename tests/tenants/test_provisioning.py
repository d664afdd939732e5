"""The template schema: cloned tenants are identical to migrated ones, and stale is noticed."""

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection
from django_tenants.utils import schema_exists

from tenants import provisioning

CATALOG_QUERIES = {
    "columns": """SELECT table_name, column_name, data_type, is_nullable, column_default
                  FROM information_schema.columns WHERE table_schema = %s""",
    "indexes": """SELECT tablename, replace(indexdef, %s, 'S') FROM pg_indexes
                  WHERE schemaname = %s""",
    "constraints": """SELECT conrelid::regclass::text, conname, contype,
                             replace(pg_get_constraintdef(c.oid), %s, 'S')
                      FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
                      WHERE n.nspname = %s""",
    "sequences": """SELECT sequence_name, data_type FROM information_schema.sequences
                    WHERE sequence_schema = %s""",
    "migrations": "SELECT app, name FROM {schema}.django_migrations",
    "triggers": """SELECT c.relname, t.tgname, replace(pg_get_triggerdef(t.oid), %s, 'S')
                   FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = %s AND NOT t.tgisinternal""",
    "functions": """SELECT p.proname, p.prosrc FROM pg_proc p
                    JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = %s""",
    "content types": "SELECT app_label, model FROM {schema}.django_content_type",
}


def catalog(schema: str) -> dict[str, set[tuple[object, ...]]]:
    result = {}
    with connection.cursor() as cursor:
        for name, sql in CATALOG_QUERIES.items():
            if "{schema}" in sql:
                cursor.execute(sql.format(schema=schema))
            elif sql.count("%s") == 2:
                cursor.execute(sql, [f"{schema}.", schema])
            else:
                cursor.execute(sql, [schema])
            rows = cursor.fetchall()
            # Relation names come back qualified with their schema when it is not on the path.
            result[name] = {tuple(str(v).replace(f"{schema}.", "") for v in row) for row in rows}
    return result


def test_cloned_schema_equals_a_freshly_migrated_one(as_table_owner):
    assert provisioning.schema_create("t_cloned_check") == "clone"
    with connection.cursor() as cursor:
        cursor.execute("CREATE SCHEMA t_migrated_check")
    provisioning.migrate_schema("t_migrated_check")

    cloned, migrated = catalog("t_cloned_check"), catalog("t_migrated_check")
    for part in CATALOG_QUERIES:
        assert cloned[part] == migrated[part], part
    assert len(cloned["columns"]) > 40 and len(cloned["indexes"]) > 10
    assert len(cloned["triggers"]) >= 3  # the append-only audit and history tables


def _make_template_stale() -> None:
    template = settings.PORTAL_TEMPLATE_SCHEMA
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {template}.django_migrations WHERE app = 'jobs'")
    assert not provisioning.template_is_current()
    assert "jobs.0001_initial" in provisioning.migration_state(template).describe()


def test_stale_template_is_never_cloned_and_the_processes_say_what_to_run(db):
    _make_template_stale()
    # The processes' role may not migrate (no CREATE): it refuses and names the command.
    with pytest.raises(ValidationError, match="migrate_portal"):
        provisioning.schema_create("t_fallback_check")
    assert not schema_exists("t_fallback_check")


def test_stale_template_owner_migrates_a_new_schema_instead(as_table_owner):
    _make_template_stale()
    # The owner (a single-role deployment) migrates new tenants from scratch instead.
    assert provisioning.schema_create("t_fallback_check") == "migrate"
    assert provisioning.migration_state("t_fallback_check").is_current
