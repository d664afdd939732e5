"""Configuration history is append-only in the database itself, like the audit log."""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION configuration_settingchange_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the configuration history is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER configuration_settingchange_append_only
    BEFORE UPDATE OR DELETE ON configuration_settingchange
    FOR EACH ROW EXECUTE FUNCTION configuration_settingchange_append_only();
CREATE TRIGGER configuration_settingchange_no_truncate
    BEFORE TRUNCATE ON configuration_settingchange
    FOR EACH STATEMENT EXECUTE FUNCTION configuration_settingchange_append_only();
"""
BACKWARD = """
DROP TRIGGER IF EXISTS configuration_settingchange_no_truncate ON configuration_settingchange;
DROP TRIGGER IF EXISTS configuration_settingchange_append_only ON configuration_settingchange;
DROP FUNCTION IF EXISTS configuration_settingchange_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("configuration", "0001_initial")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
