"""Copy the migrated template schema into a new tenant schema with plain DDL.

django-tenants' `CloneSchema` re-installs its 4,600-line plpgsql `clone_schema` function
before every clone. On a connection that lives on (a worker, a script, web workers with
persistent connections) each re-install left compiled functions and thousands of cached plans
behind, so every tenant took longer than the last (0.34 s rising to 2.9 s over 50; measured in
BENCHMARKS.md with pg_backend_memory_contexts). It also gave unique constraints PostgreSQL's
default names, which breaks later migrations that drop them by name. This copy installs no
function and reads only the template's own catalogue rows:

1. `CREATE TABLE new.t (LIKE template.t INCLUDING ALL)` for every table (columns, defaults,
   identity, NOT NULL and CHECK constraints, indexes, primary and unique keys);
2. the template's rows (migration records, content types, permissions) and identity values;
3. foreign keys, functions and triggers, printed by PostgreSQL with the template as the
   search path, so that they come out unqualified and bind to the new schema;
4. the names of constraints and indexes, which `LIKE` regenerates, set back to the
   template's (Django drops them by name in later migrations).

A test compares the catalogue of a cloned schema with that of a freshly migrated one.
"""

import re
from typing import Any

from django.db import connection
from django_tenants.utils import quote_schema_name

_PLAIN_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_TABLES = """
    SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY c.relname
"""
_FOREIGN_KEYS = """
    SELECT cl.relname, co.conname, pg_get_constraintdef(co.oid)
    FROM pg_constraint co JOIN pg_class cl ON cl.oid = co.conrelid
    JOIN pg_namespace n ON n.oid = co.connamespace
    WHERE n.nspname = %s AND co.contype = 'f' ORDER BY cl.relname, co.conname
"""
_FUNCTIONS = """
    SELECT pg_get_functiondef(p.oid) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = %s AND p.prokind = 'f' ORDER BY p.proname
"""
_TRIGGERS = """
    SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = %s AND NOT t.tgisinternal ORDER BY c.relname, t.tgname
"""
_IDENTITY_COLUMNS = """
    SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = %s AND a.attidentity <> '' AND NOT a.attisdropped
"""
_CONSTRAINTS = """
    SELECT cl.relname, co.contype, pg_get_constraintdef(co.oid), co.conname
    FROM pg_constraint co JOIN pg_class cl ON cl.oid = co.conrelid
    JOIN pg_namespace n ON n.oid = co.connamespace
    WHERE n.nspname = %s AND co.contype IN ('u', 'p', 'c', 'x')
"""
_INDEXES = """
    SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x
    JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_namespace n ON n.oid = i.relnamespace
    WHERE n.nspname = %s AND NOT EXISTS (SELECT 1 FROM pg_constraint co WHERE co.conindid = i.oid)
"""


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def clone_schema(template: str, new: str) -> None:
    """Create `new` as a structural and data copy of `template`, in the caller's transaction.

    Both names are tenant schema names (`[a-z0-9_]`), which PostgreSQL prints unquoted in the
    definitions below; that is what the replacements rely on.
    """
    if not (_PLAIN_NAME.match(template) and _PLAIN_NAME.match(new)):
        raise ValueError("schema names must be plain lowercase identifiers")
    source, target = quote_schema_name(template), quote_schema_name(new)
    # One cursor throughout: django-tenants sets the search path when it opens a cursor.
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA {target}")
        cursor.execute(_TABLES, [template])
        tables = [row[0] for row in cursor.fetchall()]
        for table in tables:
            cursor.execute(
                f"CREATE TABLE {target}.{_q(table)} (LIKE {source}.{_q(table)} INCLUDING ALL)"
            )
        for table in tables:
            cursor.execute(
                f"INSERT INTO {target}.{_q(table)} "  # noqa: S608 - catalogue names
                f"SELECT * FROM {source}.{_q(table)}"
            )
        cursor.execute(_IDENTITY_COLUMNS, [template])
        for table, column in cursor.fetchall():
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence(%s, %s), "  # noqa: S608 - catalogue names
                f"coalesce((SELECT max({_q(column)}) FROM {target}.{_q(table)}), 0) + 1, false)",
                [f"{target}.{_q(table)}", column],
            )

        cursor.execute(_FUNCTIONS, [template])
        for (definition,) in cursor.fetchall():
            # pg_get_functiondef always qualifies the function's own name with its schema.
            cursor.execute(definition.replace(f"FUNCTION {template}.", f"FUNCTION {target}.", 1))
        # Print foreign keys and triggers with the template first on the path: PostgreSQL then
        # leaves the template's names unqualified, and they bind to the new schema below.
        cursor.execute(f"SET LOCAL search_path TO {source}, public")
        cursor.execute(_FOREIGN_KEYS, [template])
        foreign_keys = cursor.fetchall()
        cursor.execute(_TRIGGERS, [template])
        triggers = [row[0] for row in cursor.fetchall()]
        cursor.execute(f"SET LOCAL search_path TO {target}, public")
        for table, name, definition in foreign_keys:
            cursor.execute(f"ALTER TABLE {_q(table)} ADD CONSTRAINT {_q(name)} {definition}")
        for definition in triggers:
            # The trigger's table is always printed qualified; its function is not.
            cursor.execute(definition.replace(f" ON {template}.", f" ON {target}.", 1))

        _restore_names(cursor, template, new)
        cursor.execute("SET LOCAL search_path TO public")


def _restore_names(cursor: Any, template: str, new: str) -> None:
    """Constraint and index names as in the template (LIKE makes up its own)."""
    target = f"{quote_schema_name(new)}."

    def constraints(schema: str) -> dict[tuple[str, str, str], str]:
        cursor.execute(_CONSTRAINTS, [schema])
        prefix = f"{schema}."
        return {
            (table, kind, definition.replace(prefix, "")): name
            for table, kind, definition, name in cursor.fetchall()
        }

    wanted = constraints(template)
    for key, name in constraints(new).items():
        if key in wanted and wanted[key] != name:
            cursor.execute(
                f"ALTER TABLE {target}{_q(key[0])} RENAME CONSTRAINT {_q(name)} "
                f"TO {_q(wanted[key])}"
            )

    def indexes(schema: str, prefix: str) -> dict[str, str]:
        cursor.execute(_INDEXES, [schema])
        # Keyed by the definition without its own name: "... INDEX ON <table> USING ...".
        return {
            definition.replace(prefix, "")
            .replace(f" {_q(name)} ", " ", 1)
            .replace(f" {name} ", " ", 1): name
            for name, definition in cursor.fetchall()
        }

    wanted_indexes = indexes(template, f"{template}.")
    for index_key, name in indexes(new, f"{new}.").items():
        if index_key in wanted_indexes and wanted_indexes[index_key] != name:
            cursor.execute(
                f"ALTER INDEX {target}{_q(name)} RENAME TO {_q(wanted_indexes[index_key])}"
            )
