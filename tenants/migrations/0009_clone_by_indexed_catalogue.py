"""The owner's clone and grants functions, reading the catalogue through its indexes only.

PostgreSQL has no index on `pg_class.relnamespace`, `pg_constraint.connamespace` or
`pg_proc.pronamespace`, and `GRANT ... ON ALL TABLES IN SCHEMA` scans `pg_class` too, so
0007's functions read every relation of every tenant once per step: tenant creation grew
from 0.30 s at 100 tenants to 0.74 s at 1,000 (BENCHMARKS.md, "Fleet"). A schema's tables,
sequences and functions are found here through `pg_depend` (indexed by the object they
depend on: the schema), and everything else from the tables' oids (indexes, constraints,
triggers and columns are indexed by their table). The steps are 0007's, unchanged.
"""

from django.db import migrations

# The schema's own relations of `kinds`, found by their dependency on the schema (indexed).
OBJECTS_OF = """
CREATE OR REPLACE FUNCTION public.portal_schema_relations(schema oid, kinds "char"[])
RETURNS oid[] LANGUAGE sql STABLE SET search_path = pg_catalog AS $fn$
    SELECT coalesce(array_agg(c.oid ORDER BY c.relname), '{}')
      FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
     WHERE d.refclassid = 'pg_namespace'::regclass AND d.refobjid = schema
       AND d.classid = 'pg_class'::regclass AND d.deptype = 'n' AND c.relkind = ANY (kinds)
$fn$;
REVOKE ALL ON FUNCTION public.portal_schema_relations(oid, "char"[]) FROM PUBLIC;
"""

CLONE_FUNCTION = r"""
CREATE OR REPLACE FUNCTION public.portal_clone_schema(template text, new text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $fn$
DECLARE
    src oid;
    dst oid;
    src_tables oid[];
    dst_tables oid[];
    r record;
    stmt text;
    foreign_keys text[];
    triggers text[];
BEGIN
    IF template !~ '^[a-z_][a-z0-9_]{0,62}$' OR new !~ '^[a-z_][a-z0-9_]{0,62}$'
       OR new IN ('public', 'information_schema') OR new LIKE 'pg\_%' THEN
        RAISE EXCEPTION 'portal_clone_schema: % is not a tenant schema name', new
            USING ERRCODE = 'invalid_schema_name';
    END IF;
    src := to_regnamespace(template);
    IF src IS NULL THEN
        RAISE EXCEPTION 'portal_clone_schema: no schema %', template
            USING ERRCODE = 'invalid_schema_name';
    END IF;
    EXECUTE format('CREATE SCHEMA %I', new);
    dst := to_regnamespace(new);
    src_tables := public.portal_schema_relations(src, ARRAY['r', 'p']::"char"[]);

    -- 1. Tables with their columns, defaults, identities, checks, indexes and keys; rows.
    FOR r IN SELECT c.relname FROM unnest(src_tables) t(oid) JOIN pg_class c ON c.oid = t.oid
             ORDER BY c.relname
    LOOP
        EXECUTE format('CREATE TABLE %I.%I (LIKE %I.%I INCLUDING ALL)',
                       new, r.relname, template, r.relname);
        EXECUTE format('INSERT INTO %I.%I SELECT * FROM %I.%I',
                       new, r.relname, template, r.relname);
    END LOOP;
    dst_tables := public.portal_schema_relations(dst, ARRAY['r', 'p']::"char"[]);
    -- 2. Identity values past the copied rows.
    FOR r IN SELECT c.relname, a.attname
               FROM unnest(dst_tables) t(oid)
               JOIN pg_class c ON c.oid = t.oid
               JOIN pg_attribute a ON a.attrelid = t.oid
              WHERE a.attnum > 0 AND a.attidentity <> '' AND NOT a.attisdropped
    LOOP
        EXECUTE format('SELECT setval(pg_get_serial_sequence(%L, %L), '
                       'coalesce((SELECT max(%I) FROM %I.%I), 0) + 1, false)',
                       format('%I.%I', new, r.relname), r.attname, r.attname, new, r.relname);
    END LOOP;
    -- 3. Functions (their own name is always printed qualified), then foreign keys and
    --    triggers printed with the template on the path, so that they come out unqualified
    --    and bind to the new schema.
    FOR r IN SELECT pg_get_functiondef(p.oid) AS definition
               FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
              WHERE d.refclassid = 'pg_namespace'::regclass AND d.refobjid = src
                AND d.classid = 'pg_proc'::regclass AND p.prokind = 'f'
              ORDER BY p.proname
    LOOP
        EXECUTE regexp_replace(r.definition, 'FUNCTION ' || template || '\.',
                               'FUNCTION ' || new || '.');
    END LOOP;
    PERFORM set_config('search_path', format('%I, public', template), true);
    SELECT coalesce(array_agg(format('ALTER TABLE %I ADD CONSTRAINT %I %s', cl.relname,
                                     co.conname, pg_get_constraintdef(co.oid))
                              ORDER BY cl.relname, co.conname), '{}')
      INTO foreign_keys
      FROM unnest(src_tables) t(oid)
      JOIN pg_constraint co ON co.conrelid = t.oid
      JOIN pg_class cl ON cl.oid = t.oid
     WHERE co.contype = 'f';
    SELECT coalesce(array_agg(regexp_replace(pg_get_triggerdef(tr.oid), ' ON ' || template || '\.',
                                             ' ON ' || new || '.')
                              ORDER BY c.relname, tr.tgname), '{}')
      INTO triggers
      FROM unnest(src_tables) t(oid)
      JOIN pg_trigger tr ON tr.tgrelid = t.oid
      JOIN pg_class c ON c.oid = t.oid
     WHERE NOT tr.tgisinternal;
    PERFORM set_config('search_path', format('%I, public', new), true);
    FOREACH stmt IN ARRAY foreign_keys LOOP
        EXECUTE stmt;
    END LOOP;
    FOREACH stmt IN ARRAY triggers LOOP
        EXECUTE stmt;
    END LOOP;

    -- 4. Constraint and index names as in the template (LIKE makes up its own, and Django
    --    drops them by name in later migrations).
    FOR r IN
        WITH wanted AS (
            SELECT cl.relname, co.contype, co.conname,
                   replace(pg_get_constraintdef(co.oid), template || '.', '') AS definition
              FROM unnest(src_tables) t(oid)
              JOIN pg_constraint co ON co.conrelid = t.oid
              JOIN pg_class cl ON cl.oid = t.oid
             WHERE co.contype IN ('u', 'p', 'c', 'x')),
        made AS (
            SELECT cl.relname, co.contype, co.conname,
                   replace(pg_get_constraintdef(co.oid), new || '.', '') AS definition
              FROM unnest(dst_tables) t(oid)
              JOIN pg_constraint co ON co.conrelid = t.oid
              JOIN pg_class cl ON cl.oid = t.oid
             WHERE co.contype IN ('u', 'p', 'c', 'x'))
        SELECT made.relname, made.conname AS have, wanted.conname AS want
          FROM made JOIN wanted USING (relname, contype, definition)
         WHERE made.conname <> wanted.conname
    LOOP
        EXECUTE format('ALTER TABLE %I.%I RENAME CONSTRAINT %I TO %I',
                       new, r.relname, r.have, r.want);
    END LOOP;
    FOR r IN
        WITH wanted AS (
            SELECT i.relname, regexp_replace(replace(pg_get_indexdef(i.oid), template || '.', ''),
                                             ' INDEX \S+ ON ', ' INDEX ON ') AS definition
              FROM unnest(src_tables) t(oid)
              JOIN pg_index x ON x.indrelid = t.oid
              JOIN pg_class i ON i.oid = x.indexrelid
             WHERE NOT EXISTS (SELECT 1 FROM pg_constraint co
                                WHERE co.conrelid = t.oid AND co.conindid = i.oid)),
        made AS (
            SELECT i.relname, regexp_replace(replace(pg_get_indexdef(i.oid), new || '.', ''),
                                             ' INDEX \S+ ON ', ' INDEX ON ') AS definition
              FROM unnest(dst_tables) t(oid)
              JOIN pg_index x ON x.indrelid = t.oid
              JOIN pg_class i ON i.oid = x.indexrelid
             WHERE NOT EXISTS (SELECT 1 FROM pg_constraint co
                                WHERE co.conrelid = t.oid AND co.conindid = i.oid))
        SELECT made.relname AS have, wanted.relname AS want
          FROM made JOIN wanted USING (definition)
         WHERE made.relname <> wanted.relname
    LOOP
        EXECUTE format('ALTER INDEX %I.%I RENAME TO %I', new, r.have, r.want);
    END LOOP;

    -- 5. The calling (application) role's rights on the new schema.
    PERFORM public.portal_app_grants(new, session_user::text);
END
$fn$;
REVOKE ALL ON FUNCTION public.portal_clone_schema(text, text) FROM PUBLIC;
"""

GRANTS_FUNCTION = r"""
CREATE OR REPLACE FUNCTION public.portal_app_grants(target text, grantee text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $fn$
DECLARE
    schema oid := to_regnamespace(target);
    kinds "char"[] := ARRAY['r', 'p', 'S', 'v', 'm'];
    r record;
BEGIN
    -- The owner keeps its rights; a single-role deployment has nothing to grant.
    IF grantee = current_user OR schema IS NULL THEN
        RETURN;
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', target, grantee);
    -- Object by object (`ON ALL TABLES IN SCHEMA` would scan all of pg_class).
    FOR r IN SELECT c.relname, c.relkind,
                    EXISTS (SELECT 1 FROM pg_trigger tr
                             WHERE tr.tgrelid = c.oid
                               AND tr.tgname = c.relname || '_append_only') AS append_only
               FROM unnest(public.portal_schema_relations(schema, kinds)) t(oid)
               JOIN pg_class c ON c.oid = t.oid
    LOOP
        IF r.relkind = 'S' THEN
            EXECUTE format('GRANT USAGE, SELECT, UPDATE ON SEQUENCE %I.%I TO %I',
                           target, r.relname, grantee);
        ELSIF r.append_only THEN
            -- Append-only tables (portal/migration_ops.py): rows are read and added only.
            EXECUTE format('GRANT SELECT, INSERT ON %I.%I TO %I', target, r.relname, grantee);
            EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON %I.%I FROM %I',
                           target, r.relname, grantee);
        ELSE
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I.%I TO %I',
                           target, r.relname, grantee);
        END IF;
    END LOOP;
    IF target = 'public' THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION public.portal_clone_schema(text, text), '
                       'public.portal_drop_schema(text) TO %I', grantee);
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION public.portal_app_grants(text, text) FROM PUBLIC;
"""


def _previous() -> str:
    from importlib import import_module

    before = import_module("tenants.migrations.0007_owner_functions")
    return (
        before.GRANTS_FUNCTION
        + before.CLONE_FUNCTION
        + "DROP FUNCTION IF EXISTS public.portal_schema_relations(oid, \"char\"[]);"
    )


class Migration(migrations.Migration):
    dependencies = [("tenants", "0008_fleet_figures")]

    operations = [
        migrations.RunSQL(OBJECTS_OF + GRANTS_FUNCTION + CLONE_FUNCTION, _previous()),
    ]
