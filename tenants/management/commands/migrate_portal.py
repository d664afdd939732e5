"""Migrate everything in order: public schema, the tenant template, then stale tenants."""

import time

from django.core.management import call_command
from django.core.management.base import BaseCommand

from tenants import provisioning
from tenants.bootstrap import public_tenant_ensure
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Apply migrations to the public schema, refresh the template schema new tenants are "
        "cloned from, and migrate each tenant schema that is behind. Run it on every deploy "
        "(once, not per web process)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--all",
            action="store_true",
            help="Run migrate on every tenant schema, even up-to-date ones.",
        )

    def handle(self, *args, **options):
        verbosity = options["verbosity"]
        started = time.perf_counter()
        call_command("migrate_schemas", shared=True, interactive=False, verbosity=verbosity - 1)
        public_tenant_ensure()
        state = provisioning.template_refresh(verbosity=verbosity - 1)
        if not state.is_current:
            raise SystemExit(f"template schema is not current: {state.describe()}")
        tenants = Tenant.objects.exclude(schema_name="public")  # purged rows have no schema
        migrated = failed = 0
        for tenant in tenants:
            if not options["all"] and provisioning.migration_state(tenant.schema_name).is_current:
                continue
            try:
                provisioning.migrate_schema(tenant.schema_name, verbosity=verbosity - 1)
                migrated += 1
            except Exception as error:  # one broken tenant must not stop the others
                failed += 1
                self.stderr.write(f"tenant {tenant.slug}: migration failed: {error}")
        self.stdout.write(
            f"public, template and {migrated} tenant schema(s) migrated"
            f"{f', {failed} FAILED' if failed else ''} in {time.perf_counter() - started:.1f}s"
        )
        if failed:
            raise SystemExit(1)
