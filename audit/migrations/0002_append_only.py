"""Audit rows are append-only in the database itself: no role of the app can rewrite them."""

from django.db import migrations

from portal.migration_ops import append_only


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]
    operations = [append_only("audit_auditevent", "the audit log")]
