"""Migration operations shared by apps: tables that the database itself keeps append-only."""

from django.db import migrations


def append_only(table: str, what: str, *, truncate: bool = True) -> migrations.RunSQL:
    """Refuse UPDATE and DELETE (and TRUNCATE) on `table` for every role of the application.

    `what` names the table for people: "the audit log is append-only (DELETE refused)".
    """
    function = f"{table}_append_only"
    truncate_sql = (
        (
            f"CREATE TRIGGER {table}_no_truncate\n"
            f"    BEFORE TRUNCATE ON {table}\n"
            f"    FOR EACH STATEMENT EXECUTE FUNCTION {function}();\n"
        )
        if truncate
        else ""
    )
    # Tables are created with the application role's default privileges (portal/dbroles.py):
    # it keeps SELECT and INSERT here and loses the rest, whatever it is called.
    revoke = f"""
DO $$
DECLARE grantee text;
BEGIN
    FOR grantee IN SELECT DISTINCT a.grantee::regrole::text
                   FROM pg_class c, aclexplode(c.relacl) a
                   WHERE c.oid = '{table}'::regclass AND a.grantee <> c.relowner
                         AND a.grantee <> 0
    LOOP
        EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM %s', grantee);
    END LOOP;
END
$$;
"""  # noqa: S608 - `table` is a constant of a migration
    forward = (
        revoke
        + f"""
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '{what} is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER {function}
    BEFORE UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION {function}();
{truncate_sql}"""
    )
    backward = (
        (f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table};\n" if truncate else "")
        + f"DROP TRIGGER IF EXISTS {function} ON {table};\n"
        + f"DROP FUNCTION IF EXISTS {function}();\n"
    )
    return migrations.RunSQL(forward, backward)
