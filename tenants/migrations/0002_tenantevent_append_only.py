"""Tenant history is append-only in the database itself, not only in the UI."""

from django.db import migrations

from portal.migration_ops import append_only


class Migration(migrations.Migration):
    dependencies = [("tenants", "0001_initial")]
    operations = [append_only("tenants_tenantevent", "tenant history", truncate=False)]
