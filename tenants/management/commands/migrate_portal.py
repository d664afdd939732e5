"""Migrate everything in order: public schema, the tenant template, then stale tenants."""

import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from portal import dbroles
from tenants import provisioning
from tenants.bootstrap import public_tenant_ensure
from tenants.figures import figures_refresh
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Apply migrations to the public schema, refresh the template schema new tenants are "
        "cloned from, and migrate each tenant schema that is behind. Run it on every deploy "
        "(once, not per web process). Connects as DATABASE_OWNER_URL's role when set, "
        "creates DATABASE_URL's role if it is missing and grants it its rights."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--all",
            action="store_true",
            help="Run migrate on every tenant schema, even up-to-date ones.",
        )

    def handle(self, *args, **options):
        with dbroles.as_owner():
            self.migrate(all_schemas=options["all"], verbosity=options["verbosity"])

    def migrate(self, *, all_schemas: bool, verbosity: int) -> None:
        started = time.perf_counter()
        role = dbroles.app_role_ensure()
        call_command("migrate_schemas", shared=True, interactive=False, verbosity=verbosity - 1)
        public_tenant_ensure()
        state = provisioning.template_refresh(verbosity=verbosity - 1)
        if not state.is_current:
            raise SystemExit(f"template schema is not current: {state.describe()}")
        tenants = Tenant.objects.exclude(schema_name="public")  # purged rows have no schema
        migrated: list[str] = []
        failed = 0
        for tenant in tenants:
            if not all_schemas and provisioning.migration_state(tenant.schema_name).is_current:
                continue
            try:
                provisioning.migrate_schema(tenant.schema_name, verbosity=verbosity - 1)
                migrated.append(tenant.schema_name)
            except Exception as error:  # one broken tenant must not stop the others
                failed += 1
                self.stderr.write(f"tenant {tenant.slug}: migration failed: {error}")
        # The fleet's figures know the new migrations at once (the periodic pass would, later).
        figures_refresh(tenants=tenants.filter(schema_name__in=migrated), time_budget=None)
        granted = 0
        if role is not None:
            # New tables of the migrated schemas, and schemas the role cannot use yet (the
            # first run with the split, a role created since, or tables another migration
            # path made).
            every = ["public", settings.PORTAL_TEMPLATE_SCHEMA, *(t.schema_name for t in tenants)]
            schemas = {"public", settings.PORTAL_TEMPLATE_SCHEMA, *migrated}
            schemas.update(dbroles.schemas_without_grants(role, every))
            dbroles.app_grants(role, sorted(schemas))
            granted = len(schemas)
        self.stdout.write(
            f"public, template and {len(migrated)} tenant schema(s) migrated"
            f"{f', {failed} FAILED' if failed else ''}"
            f"{f'; {role} granted on {granted} schema(s)' if role else ''}"
            f" in {time.perf_counter() - started:.1f}s"
        )
        if failed:
            raise SystemExit(1)
