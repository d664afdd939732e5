"""The only schema-level work the application role may do, as functions the owner defines.

The portal's processes connect as a role that owns nothing (portal/dbroles.py), so they can
neither create nor drop a schema, nor alter a table or its triggers. Creating a tenant and
purging one still happen at run time, through these SECURITY DEFINER functions: they run
with the owner's rights, do exactly one thing, and check their arguments first.

- `portal_clone_schema(template, new)`: tenants/cloning.py explains the steps;
- `portal_drop_schema(schema)`: only the schema of a tenant row already marked purged;
- `portal_app_grants(schema, role)`: the application role's rights on one schema (rows of
  every table, but no UPDATE, DELETE or TRUNCATE on the append-only ones); not callable by
  the application itself.
"""

from django.db import migrations

# The steps and why they are needed: tenants/cloning.py. Catalogue rows are selected by
# namespace oid (indexed), not by joining pg_namespace by name, which scans every pg_class row.
CLONE_FUNCTION = r"""
CREATE OR REPLACE FUNCTION public.portal_clone_schema(template text, new text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $fn$
DECLARE
    src oid;
    dst oid;
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

    -- 1. Tables with their columns, defaults, identities, checks, indexes and keys; rows.
    FOR r IN SELECT c.relname FROM pg_class c
             WHERE c.relnamespace = src AND c.relkind IN ('r', 'p') ORDER BY c.relname
    LOOP
        EXECUTE format('CREATE TABLE %I.%I (LIKE %I.%I INCLUDING ALL)',
                       new, r.relname, template, r.relname);
        EXECUTE format('INSERT INTO %I.%I SELECT * FROM %I.%I',
                       new, r.relname, template, r.relname);
    END LOOP;
    -- 2. Identity values past the copied rows.
    FOR r IN SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
             WHERE c.relnamespace = dst AND a.attidentity <> '' AND NOT a.attisdropped
    LOOP
        EXECUTE format('SELECT setval(pg_get_serial_sequence(%L, %L), '
                       'coalesce((SELECT max(%I) FROM %I.%I), 0) + 1, false)',
                       format('%I.%I', new, r.relname), r.attname, r.attname, new, r.relname);
    END LOOP;
    -- 3. Functions (their own name is always printed qualified), then foreign keys and
    --    triggers printed with the template on the path, so that they come out unqualified
    --    and bind to the new schema.
    FOR r IN SELECT pg_get_functiondef(p.oid) AS definition FROM pg_proc p
             WHERE p.pronamespace = src AND p.prokind = 'f' ORDER BY p.proname
    LOOP
        EXECUTE regexp_replace(r.definition, 'FUNCTION ' || template || '\.',
                               'FUNCTION ' || new || '.');
    END LOOP;
    PERFORM set_config('search_path', format('%I, public', template), true);
    SELECT coalesce(array_agg(format('ALTER TABLE %I ADD CONSTRAINT %I %s', cl.relname,
                                     co.conname, pg_get_constraintdef(co.oid))
                              ORDER BY cl.relname, co.conname), '{}')
      INTO foreign_keys
      FROM pg_constraint co JOIN pg_class cl ON cl.oid = co.conrelid
     WHERE co.connamespace = src AND co.contype = 'f';
    SELECT coalesce(array_agg(regexp_replace(pg_get_triggerdef(t.oid), ' ON ' || template || '\.',
                                             ' ON ' || new || '.')
                              ORDER BY c.relname, t.tgname), '{}')
      INTO triggers
      FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
     WHERE c.relnamespace = src AND NOT t.tgisinternal;
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
              FROM pg_constraint co JOIN pg_class cl ON cl.oid = co.conrelid
             WHERE co.connamespace = src AND co.contype IN ('u', 'p', 'c', 'x')),
        made AS (
            SELECT cl.relname, co.contype, co.conname,
                   replace(pg_get_constraintdef(co.oid), new || '.', '') AS definition
              FROM pg_constraint co JOIN pg_class cl ON cl.oid = co.conrelid
             WHERE co.connamespace = dst AND co.contype IN ('u', 'p', 'c', 'x'))
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
              FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
             WHERE i.relnamespace = src
               AND NOT EXISTS (SELECT 1 FROM pg_constraint co WHERE co.conindid = i.oid)),
        made AS (
            SELECT i.relname, regexp_replace(replace(pg_get_indexdef(i.oid), new || '.', ''),
                                             ' INDEX \S+ ON ', ' INDEX ON ') AS definition
              FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
             WHERE i.relnamespace = dst
               AND NOT EXISTS (SELECT 1 FROM pg_constraint co WHERE co.conindid = i.oid))
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
    r record;
BEGIN
    -- The owner keeps its rights; a single-role deployment has nothing to grant.
    IF grantee = current_user
       OR NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = target) THEN
        RETURN;
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', target, grantee);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I',
                   target, grantee);
    EXECUTE format('GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA %I TO %I',
                   target, grantee);
    -- Append-only tables carry a trigger named <table>_append_only (portal/migration_ops.py).
    FOR r IN SELECT DISTINCT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
             WHERE c.relnamespace = to_regnamespace(target) AND t.tgname = c.relname || '_append_only'
    LOOP
        EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON %I.%I FROM %I',
                       target, r.relname, grantee);
    END LOOP;
    IF target = 'public' THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION public.portal_clone_schema(text, text), '
                       'public.portal_drop_schema(text) TO %I', grantee);
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION public.portal_app_grants(text, text) FROM PUBLIC;
"""

DROP_FUNCTION = r"""
CREATE OR REPLACE FUNCTION public.portal_drop_schema(target text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $fn$
BEGIN
    -- The purge marks the row first, in the same transaction (tenants/services.py), and the
    -- row and its history stay: a schema is never dropped without that record.
    IF NOT EXISTS (SELECT 1 FROM public.tenants_tenant
                   WHERE schema_name = target AND status = 'purged') THEN
        RAISE EXCEPTION 'portal_drop_schema: % is not the schema of a purged tenant', target
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    EXECUTE format('DROP SCHEMA IF EXISTS %I CASCADE', target);
END
$fn$;
REVOKE ALL ON FUNCTION public.portal_drop_schema(text) FROM PUBLIC;
"""

# The grants function first: the clone function calls it.
FORWARD = GRANTS_FUNCTION + DROP_FUNCTION + CLONE_FUNCTION
BACKWARD = """
DROP FUNCTION IF EXISTS public.portal_app_grants(text, text);
DROP FUNCTION IF EXISTS public.portal_drop_schema(text);
DROP FUNCTION IF EXISTS public.portal_clone_schema(text, text);
"""


class Migration(migrations.Migration):
    dependencies = [("tenants", "0006_selftest_run")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
