"""The product's tenant-schema DDL stays within what schema-based sharding (Citus) supports:
read from the template schema every tenant is cloned from (docs/scale-out.md)."""

from django.conf import settings
from django.db import connection


def rows(sql: str) -> list[tuple]:  # type: ignore[type-arg]
    with connection.cursor() as cursor:
        cursor.execute(sql, [settings.PORTAL_TEMPLATE_SCHEMA])
        return cursor.fetchall()


def test_the_template_schema_has_tables_to_check(db):
    tables = rows(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind = 'r'"
    )
    assert tables[0][0] > 20


def test_no_foreign_key_leaves_the_tenant_schema(db):
    leaving = rows(
        """SELECT con.conname, target_ns.nspname || '.' || target.relname
           FROM pg_constraint con
           JOIN pg_namespace ns ON ns.oid = con.connamespace
           JOIN pg_class target ON target.oid = con.confrelid
           JOIN pg_namespace target_ns ON target_ns.oid = target.relnamespace
           WHERE con.contype = 'f' AND ns.nspname = %s AND target_ns.nspname <> ns.nspname"""
    )
    assert leaving == []


def test_no_column_takes_its_values_from_another_schema(db):
    foreign = rows(
        """SELECT c.relname, a.attname, pg_get_expr(d.adbin, d.adrelid)
           FROM pg_attrdef d
           JOIN pg_class c ON c.oid = d.adrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
           WHERE n.nspname = %s"""
    )
    template = settings.PORTAL_TEMPLATE_SCHEMA
    for table, column, default in foreign:
        assert "nextval" not in default or f"'{template}." in default, (table, column, default)
    identity = rows(
        """SELECT count(*) FROM pg_depend dep
           JOIN pg_class seq ON seq.oid = dep.objid AND seq.relkind = 'S'
           JOIN pg_class tab ON tab.oid = dep.refobjid
           WHERE tab.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = %s)
             AND seq.relnamespace <> tab.relnamespace"""
    )
    assert identity[0][0] == 0


def test_views_and_triggers_name_only_their_schema_and_public_functions(db):
    views = rows(
        """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %s AND c.relkind IN ('v', 'm')"""
    )
    assert views == []
    triggers = rows(
        """SELECT t.tgname, fn.nspname
           FROM pg_trigger t
           JOIN pg_class c ON c.oid = t.tgrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_proc p ON p.oid = t.tgfoid
           JOIN pg_namespace fn ON fn.oid = p.pronamespace
           WHERE n.nspname = %s AND NOT t.tgisinternal"""
    )
    assert triggers, "the append-only tables have their trigger"
    assert {schema for _, schema in triggers} <= {"public", settings.PORTAL_TEMPLATE_SCHEMA}
