"""Configuration history is append-only in the database itself, like the audit log."""

from django.db import migrations

from portal.migration_ops import append_only


class Migration(migrations.Migration):
    dependencies = [("configuration", "0001_initial")]
    operations = [append_only("configuration_settingchange", "the configuration history")]
