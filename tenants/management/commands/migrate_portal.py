"""Migrate everything in order: public schema, the tenant template, then stale tenants."""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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
        parser.add_argument(
            "--jobs",
            type=int,
            default=1,
            help="Migrate the tenant schemas in this many processes at once (default 1; "
            "about one per database core). A tenant that fails does not stop the others.",
        )
        # Internal: the share of one of those processes (tenant schemas only).
        parser.add_argument("--schemas", nargs="*", help=argparse.SUPPRESS)

    def handle(self, *args, **options):
        with dbroles.as_owner():
            if options["schemas"] is not None:
                outcome = self.share(options["schemas"], verbosity=options["verbosity"])
                self.stdout.write(json.dumps(outcome))
                return
            self.migrate(
                all_schemas=options["all"], jobs=options["jobs"], verbosity=options["verbosity"]
            )

    def share(self, schemas: list[str], *, verbosity: int) -> dict[str, Any]:
        """One process's schemas, migrated one by one: which were, which failed and why."""
        migrated, failed = [], {}
        for schema in schemas:
            try:
                provisioning.migrate_schema(schema, verbosity=verbosity - 1)
                migrated.append(schema)
            except Exception as error:  # one broken tenant must not stop the others
                failed[schema] = str(error)[:500]
        return {"migrated": migrated, "failed": failed}

    def migrate(self, *, all_schemas: bool, jobs: int, verbosity: int) -> None:
        started = time.perf_counter()
        role = dbroles.app_role_ensure()
        call_command("migrate_schemas", shared=True, interactive=False, verbosity=verbosity - 1)
        public_tenant_ensure()
        state = provisioning.template_refresh(verbosity=verbosity - 1)
        if not state.is_current:
            raise SystemExit(f"template schema is not current: {state.describe()}")
        tenants = Tenant.objects.exclude(schema_name="public")  # purged rows have no schema
        due = [
            tenant.schema_name
            for tenant in tenants
            if all_schemas or not provisioning.migration_state(tenant.schema_name).is_current
        ]
        shares = [due[n :: max(1, jobs)] for n in range(max(1, jobs))]
        outcome = self.run_shares([share for share in shares if share], verbosity=verbosity)
        migrated: list[str] = outcome["migrated"]
        for schema, error in sorted(outcome["failed"].items()):
            self.stderr.write(f"tenant schema {schema}: migration failed: {error}")
        failed = len(outcome["failed"])
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

    def run_shares(self, shares: list[list[str]], *, verbosity: int) -> dict[str, Any]:
        """Each share in a `migrate_portal --schemas` process of its own, all at once."""
        if len(shares) <= 1:
            return self.share(shares[0] if shares else [], verbosity=verbosity)
        manage = Path(settings.BASE_DIR) / "manage.py"
        # Schema names come from the tenants table (validated when created), not from input.
        processes = [
            subprocess.Popen(  # noqa: S603
                [sys.executable, str(manage), "migrate_portal", "--schemas", *share],
                stdout=subprocess.PIPE,
                text=True,
            )
            for share in shares
        ]
        outcome: dict[str, Any] = {"migrated": [], "failed": {}}
        for process, share in zip(processes, shares, strict=True):
            output, _ = process.communicate()
            try:
                result = json.loads(output.strip().splitlines()[-1])
            except (ValueError, IndexError):
                result = {"migrated": [], "failed": dict.fromkeys(share, "its process failed")}
            outcome["migrated"] += result["migrated"]
            outcome["failed"].update(result["failed"])
        return outcome
