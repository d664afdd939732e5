"""Tenant history is append-only in the database itself, not only in the UI."""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION tenants_tenantevent_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'tenant history is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER tenants_tenantevent_append_only
    BEFORE UPDATE OR DELETE ON tenants_tenantevent
    FOR EACH ROW EXECUTE FUNCTION tenants_tenantevent_append_only();
"""
BACKWARD = """
DROP TRIGGER IF EXISTS tenants_tenantevent_append_only ON tenants_tenantevent;
DROP FUNCTION IF EXISTS tenants_tenantevent_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("tenants", "0001_initial")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
