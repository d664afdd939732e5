"""Two database roles: the owner migrates, the application only reads and writes rows.

The owner (`DATABASE_OWNER_URL`) owns every schema, table, trigger and function; it runs
`migrate_portal` and `tenant import`. Every process (web, workers, gateway, beat) connects as
the application role (`DATABASE_URL`), which owns nothing and has no CREATE anywhere:

- on every table, SELECT, INSERT, UPDATE and DELETE; on the append-only ones (the audit log
  and its seals, the configuration history, the tenant history) only SELECT and INSERT, so
  a process that is taken over can neither rewrite them nor disable or drop their triggers
  (only an owner may alter a table);
- schemas are created and dropped only through the owner's functions
  `portal_clone_schema` and `portal_drop_schema` (tenants/migrations/0007_owner_functions.py).

`migrate_portal` creates the application role when it is missing (with the password in
`DATABASE_URL`, if the owner may create roles) and grants it its rights on every schema it
migrated or that lacks them. With `DATABASE_OWNER_URL` unset, one role does both, as before.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import connections
from psycopg import sql

_CREDENTIALS = ("USER", "PASSWORD", "HOST", "PORT")


def owner_settings() -> dict[str, Any] | None:
    """The owner's connection settings, or None when one role does both."""
    owner = settings.PORTAL_DATABASE_OWNER
    if not owner or owner.get("USER") == settings.PORTAL_DATABASE_APP_ROLE["USER"]:
        return None
    return owner


def app_role() -> str | None:
    """The application role that the owner grants to, or None when one role does both."""
    return settings.PORTAL_DATABASE_APP_ROLE["USER"] if owner_settings() else None


@contextmanager
def as_owner(alias: str = "default") -> Iterator[None]:
    """Run the block with the connection `alias` logged in as the owner role.

    The connection is closed and reopened on each side (a role is chosen when connecting),
    so this cannot happen inside a transaction; there it only passes when the transaction
    already runs as the owner (a test that has `SET ROLE`).
    """
    owner = owner_settings()
    connection = connections[alias]
    if owner is None:
        yield
        return
    if connection.settings_dict.get("USER") == owner["USER"]:
        yield  # already the owner (nested)
        return
    if connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user")
            if cursor.fetchone()[0] != owner["USER"]:
                raise RuntimeError("as_owner() reconnects, so it cannot run inside a transaction")
        yield
        return
    saved = {key: connection.settings_dict.get(key) for key in _CREDENTIALS}
    saved_options = dict(connection.settings_dict.get("OPTIONS") or {})
    connection.close()
    # In place: settings.DATABASES holds the same dict, so that connections made from
    # settings meanwhile (a migration executor's) log in as the owner too.
    connection.settings_dict.update({key: owner.get(key, "") for key in _CREDENTIALS})
    connection.settings_dict["OPTIONS"] = {**saved_options, **(owner.get("OPTIONS") or {})}
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.update(saved)
        connection.settings_dict["OPTIONS"] = saved_options


def app_role_ensure() -> str | None:
    """Create the application role if it is missing; close the public schema to CREATE.

    Runs as the owner. Returns the role's name, or None when one role does both.
    """
    role = app_role()
    if role is None:
        return None
    password = settings.PORTAL_DATABASE_APP_ROLE["PASSWORD"] or None
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
        if cursor.fetchone() is None:
            cursor.execute(
                sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}")
                .format(sql.Identifier(role), sql.Literal(password))
                .as_string(cursor.connection)
            )
        # Tables the owner creates from now on, wherever it is migrated from, are the
        # application's to read and write (append-only ones lose UPDATE and DELETE again:
        # portal/migration_ops.py and portal_app_grants).
        for grant in (
            "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {}",
            "GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {}",
        ):
            cursor.execute(
                sql.SQL("ALTER DEFAULT PRIVILEGES " + grant)
                .format(sql.Identifier(role))
                .as_string(cursor.connection)
            )
        # Before PostgreSQL 15 every role may create tables in public.
        cursor.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        cursor.execute(
            sql.SQL("REVOKE CREATE ON DATABASE {} FROM PUBLIC")
            .format(sql.Identifier(connections["default"].settings_dict["NAME"]))
            .as_string(cursor.connection)
        )
    return role


def schemas_without_grants(role: str, schemas: Sequence[str]) -> list[str]:
    """The existing schemas of `schemas` that `role` may not use yet, or that hold a table it
    may not read (one migrated by something other than `migrate_portal`); one query."""
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT n.nspname FROM pg_namespace n WHERE n.nspname = ANY(%s) "
            "AND (NOT has_schema_privilege(%s, n.oid, 'USAGE') OR EXISTS ("
            "  SELECT 1 FROM pg_class c WHERE c.relnamespace = n.oid AND c.relkind = 'r' "
            "  AND NOT has_table_privilege(%s, c.oid, 'SELECT'))) ORDER BY n.nspname",
            [list(schemas), role, role],
        )
        return [row[0] for row in cursor.fetchall()]


def app_grants(role: str, schemas: Sequence[str]) -> None:
    """Grant `role` the application's rights on each schema (runs as the owner)."""
    with connections["default"].cursor() as cursor:
        for schema in schemas:
            cursor.execute("SELECT public.portal_app_grants(%s, %s)", [schema, role])


def owns_tables() -> bool:
    """Whether this connection's role owns the tables (not the processes' role, when split)."""
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_class c "
            "WHERE c.oid = to_regclass('public.tenants_tenantevent')"
        )
        row = cursor.fetchone()
    return bool(row and row[0])
