"""`manage.py tenant create|list|show|update|suspend|resume|delete|restore|purge|export|import|
verify|audit-verify|selftest`."""

import json
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django_tenants.utils import tenant_context

from audit.chain import audit_seal, audit_verify
from tenants import backup, selectors, services
from tenants.figures import figures_refresh
from tenants.links import tenant_base_url
from tenants.models import Tenant, TenantStatus
from tenants.selftest import tenant_selftest


class Command(BaseCommand):
    help = "Manage tenants from the command line (the same operations as the super-admin site)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--actor", default="cli", help="Name recorded in the tenant history.")
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        create = sub.add_parser("create", help="Create a tenant and print its admin's link.")
        create.add_argument("slug", help="Lowercase DNS label, e.g. st-marys.")
        create.add_argument("--name", required=True, help="Display name.")
        create.add_argument("--admin-email", required=True, help="E-mail of the tenant admin.")
        create.add_argument("--ae-title", help="Called AE title for DICOM, e.g. STMARYS.")
        create.add_argument("--quota-bytes", type=int, help="Storage quota in bytes.")
        create.add_argument("--quota-users", type=int, help="Maximum number of users.")
        create.add_argument(
            "--storage-root", help="Allowed storage root (inside PORTAL_STORAGE_ROOT)."
        )

        update = sub.add_parser(
            "update",
            help="Change a tenant's name, AE title, quotas or storage root (only what is given).",
        )
        update.add_argument("slug")
        update.add_argument("--name", help="Display name.")
        update.add_argument(
            "--ae-title",
            help="Called AE title (routes DICOM to the tenant; a title never passes to "
            "another tenant).",
        )
        update.add_argument("--quota-bytes", type=int, help="Storage quota in bytes.")
        update.add_argument("--quota-users", type=int, help="Maximum number of active users.")
        update.add_argument(
            "--storage-root", help="Allowed storage root (inside PORTAL_STORAGE_ROOT)."
        )

        listing = sub.add_parser("list", help="List tenants with their status and figures.")
        listing.add_argument("--json", action="store_true", help="Print JSON lines.")
        listing.add_argument("--include-purged", action="store_true")

        for name, text in [
            ("show", "Show one tenant and its history."),
            ("resume", "Resume a suspended tenant."),
            ("restore", "Undo a deletion during the grace period."),
            ("purge", "Purge a deleted tenant now (schema and files)."),
        ]:
            sub.add_parser(name, help=text).add_argument("slug")
        audit_verify = sub.add_parser(
            "audit-verify",
            help="Check the tenant's audit log against its hash chain; exit 1 at a broken link.",
            description=(
                "Recompute every seal of the tenant's audit hash chain from its rows and report "
                "the first link that no longer matches (a row changed, removed or added, or a "
                "seal changed). Rows younger than the sealing delay are not yet covered."
            ),
        )
        audit_verify.add_argument("slug")
        sub.add_parser(
            "selftest",
            help="Probe the tenant boundary with two throw-away tenants; exit 1 on a leak.",
            description=(
                "Create two throw-away tenants, fill A with a study, a user, a token, a node "
                "and a job, then request every route of the tenant site as B (B's session, "
                "B's token, A's token, A's session cookie) with A's ids and UIDs, in GET and "
                "POST. Any of A's data in an answer, or any of A's rows changed, is a leak. "
                "Both tenants are purged afterwards. Run it after every upgrade."
            ),
        )
        audit_verify.add_argument(
            "--seal", action="store_true", help="Seal the rows old enough first."
        )
        admin_link = sub.add_parser(
            "admin-link",
            help="Issue and e-mail a new set-password link for a tenant's admin; print it.",
            description=(
                "For when the first link expired or was lost: a new one-time link for the "
                "tenant's first active admin (or --username), e-mailed to them and printed "
                "once. Recorded in the tenant's history and audit log."
            ),
        )
        admin_link.add_argument("slug")
        admin_link.add_argument("--username", default="", help="Another of the tenant's admins.")
        suspend = sub.add_parser("suspend", help="Suspend a tenant (site, API, DICOM blocked).")
        suspend.add_argument("slug")
        suspend.add_argument("--reason", default="")
        delete = sub.add_parser("delete", help="Delete a tenant (purged after the grace period).")
        delete.add_argument("slug")
        delete.add_argument(
            "--confirm", required=True, metavar="SLUG", help="The slug again, to confirm."
        )

        export = sub.add_parser(
            "export",
            help="Back up one tenant (rows, public facts, files) into a new directory.",
            description=(
                "Write the tenant's database rows (CSV per table), its public-schema facts and "
                "migration state (manifest.json) and its storage root (files/, SHA-256 per "
                "file) into DIRECTORY, which must be new or empty. manifest.json is written "
                "last: a directory without it is an unfinished export. Password hashes, "
                "TOTP devices and API token hashes are included (protect the directory); "
                "sessions and login-throttle state are not. Suspend the tenant first for an "
                "exact copy."
            ),
        )
        export.add_argument("slug", metavar="SLUG", help="The tenant to back up.")
        export.add_argument(
            "directory", metavar="DIRECTORY", type=Path, help="New or empty target directory."
        )
        export.add_argument(
            "--allow-problems",
            action="store_true",
            help="Export even when instance files are missing or differ from the index "
            "(they are listed in the manifest); without it such an export fails.",
        )

        restore = sub.add_parser(
            "import",
            help="Restore an export as a NEW tenant (nothing or complete).",
            description=(
                "Check DIRECTORY's manifest and every file's SHA-256, the migration state and "
                "that SLUG and the AE title are free, then create SLUG through the normal "
                "provisioning path and replace its rows and files with the export's, in one "
                "transaction. Storage media are moved to the new tenant's storage root. The "
                "users keep their passwords and tokens; nobody is logged in. Logs in as "
                "DATABASE_OWNER_URL's role (the owner of the tables)."
            ),
        )
        restore.add_argument(
            "directory", metavar="DIRECTORY", type=Path, help="A directory written by `export`."
        )
        restore.add_argument(
            "slug", metavar="SLUG", help="The new tenant's slug (never used before)."
        )
        restore.add_argument(
            "--ae-title",
            help="Called AE title of the new tenant (default: the slug in capitals). The "
            "source's is taken while the source exists.",
        )
        restore.add_argument("--name", help="Display name (default: the source's).")
        restore.add_argument(
            "--storage-root",
            help="Allowed storage root, new or empty (default: PORTAL_STORAGE_ROOT/<slug>).",
        )

        verify = sub.add_parser(
            "verify",
            help="Check an export against its manifest (every SHA-256); changes nothing.",
            description=(
                "Read DIRECTORY/manifest.json and check the size and SHA-256 of every file it "
                "lists, and that the directory holds no other file. Run it on a copy of a "
                "backup before relying on it; `import` runs the same checks first."
            ),
        )
        verify.add_argument(
            "directory", metavar="DIRECTORY", type=Path, help="A directory written by `export`."
        )

    def handle(self, *args, **options):
        action, actor = options["action"], options["actor"]
        try:
            if action == "create":
                self._create(options, actor)
            elif action == "list":
                self._list(options)
            elif action == "import":
                self._import(options, actor)
            elif action == "verify":
                self._verify(options)
            elif action == "export":
                self._export(self._get(options["slug"]), options, actor)
            elif action == "selftest":
                self._selftest(actor)
            elif action == "audit-verify":
                self._audit_verify(self._get(options["slug"]), seal=options["seal"])
            else:
                tenant = self._get(options["slug"])
                if action == "show":
                    self._show(tenant)
                elif action == "update":
                    services.tenant_update(
                        tenant=tenant,
                        actor=actor,
                        **{
                            field: options[field]
                            for field in (
                                "name",
                                "ae_title",
                                "quota_bytes",
                                "quota_users",
                                "storage_root",
                            )
                        },
                    )
                elif action == "suspend":
                    services.tenant_suspend(tenant=tenant, actor=actor, reason=options["reason"])
                elif action == "resume":
                    services.tenant_resume(tenant=tenant, actor=actor)
                elif action == "restore":
                    services.tenant_restore(tenant=tenant, actor=actor)
                elif action == "delete":
                    services.tenant_delete(
                        tenant=tenant, actor=actor, confirm_slug=options["confirm"]
                    )
                    self.stdout.write(f"purge after {tenant.purge_after:%Y-%m-%d %H:%M %Z}")
                elif action == "purge":
                    services.tenant_purge(tenant=tenant, actor=actor)
                elif action == "admin-link":
                    link = services.tenant_admin_link(
                        tenant=tenant, actor=actor, username=options["username"]
                    )
                    self.stdout.write(f"e-mailed to:          {link.user.email}")
                    self.stdout.write(f"admin set-password:   {link.url}")
                    self.stdout.write(f"expires:              {link.expires_at:%Y-%m-%d %H:%M %Z}")
                if action != "show":
                    self.stdout.write(self.style.SUCCESS(f"{tenant.slug}: {tenant.status}"))
        except ValidationError as error:
            raise CommandError(
                "; ".join(f"{k}: {' '.join(v)}" for k, v in error.message_dict.items())
                if hasattr(error, "error_dict")
                else " ".join(error.messages)
            ) from None
        except (services.TenantLifecycleError, backup.BackupError) as error:
            raise CommandError(str(error)) from None

    def _selftest(self, actor: str) -> None:
        report = tenant_selftest(actor=actor, say=self.stdout.write)
        self.stdout.write(
            f"{report.routes} routes, {report.probes} requests in {report.seconds:.1f} s; "
            f"{len(report.leaks)} leaks, {len(report.errors)} server errors"
        )
        seen = ", ".join(f"{name}: {count}" for name, count in report.own.items())
        self.stdout.write(f"answers showing B its own data ({seen})")
        self.stdout.write(f"DIMSE: {report.dimse}")
        for error in report.errors[:20]:
            self.stdout.write(f"  server error: {error}")
        for leak in report.leaks:
            self.stdout.write(f"  LEAK: {leak.method} {leak.url} as {leak.credential}: {leak.what}")
        if not report.ok:
            raise CommandError(f"{len(report.leaks)} leaks across the tenant boundary")
        self.stdout.write(self.style.SUCCESS("no leak across the tenant boundary"))

    def _audit_verify(self, tenant: Tenant, *, seal: bool) -> None:
        if tenant.status == TenantStatus.PURGED:
            raise CommandError(f"{tenant.slug} is purged: it has no audit log left")
        with tenant_context(tenant):
            if seal:
                audit_seal()
            report = audit_verify()
        self.stdout.write(
            f"{tenant.slug}: {report.seals} seals over {report.events} events; "
            f"{report.unsealed} events not sealed yet"
        )
        if not report.ok:
            raise CommandError(f"broken chain: {report.broken}")
        self.stdout.write(self.style.SUCCESS(f"{tenant.slug}: the audit chain holds"))

    def _get(self, slug: str) -> Tenant:
        tenant = selectors.tenant_list(include_purged=True).filter(slug=slug).first()
        if tenant is None:
            raise CommandError(f"no tenant with slug {slug!r}")
        return tenant

    def _create(self, options: dict, actor: str) -> None:
        creation = services.tenant_create(
            slug=options["slug"],
            name=options["name"],
            admin_email=options["admin_email"],
            ae_title=options["ae_title"],
            quota_bytes=options["quota_bytes"],
            quota_users=options["quota_users"],
            storage_root=options["storage_root"],
            created_by=actor,
        )
        self.stdout.write(self.style.SUCCESS(f"created {creation.tenant.slug} ({creation.method})"))
        self.stdout.write(f"site:                 {tenant_base_url(creation.tenant)}/")
        self.stdout.write(f"admin set-password:   {creation.set_password_url}")
        if creation.expires_at:
            self.stdout.write(f"expires:              {creation.expires_at:%Y-%m-%d %H:%M %Z}")

    def _list(self, options: dict) -> None:
        figures_refresh(time_budget=None)  # the due ones: what is listed is current
        rows = []
        for tenant in selectors.fleet(include_purged=options["include_purged"]):
            figures = getattr(tenant, "fleet_figures", None)
            if tenant.status == "purged" or figures is None or figures.error:
                if tenant.status == "purged":
                    note = "purged"
                elif figures is None:
                    note = "not measured"
                else:
                    note = f"not readable ({figures.error})"
                rows.append((tenant, None, None, note))
                continue
            migrations = figures.migrations_note if figures.missing_migrations else "up to date"
            rows.append((tenant, figures.users, figures.used_bytes, migrations))
        if options["json"]:
            for tenant, users, used, migrations in rows:
                self.stdout.write(
                    json.dumps(
                        {
                            "slug": tenant.slug,
                            "name": tenant.name,
                            "status": tenant.status,
                            "schema": tenant.schema_name,
                            "users": users,
                            "used_bytes": used,
                            "migrations": migrations,
                        }
                    )
                )
            return
        self.stdout.write(f"{'SLUG':<20} {'STATUS':<12} {'USERS':>5} {'USED':>14}  MIGRATIONS")
        for tenant, users, used, migrations in rows:
            self.stdout.write(
                f"{tenant.slug:<20} {tenant.status:<12} "
                f"{users if users is not None else '?':>5} "
                f"{used if used is not None else '?':>14}"
                f"  {migrations}"
            )

    def _show(self, tenant: Tenant) -> None:
        self.stdout.write(
            f"{tenant.slug}: {tenant.name} [{tenant.status}] "
            f"schema={tenant.schema_name} root={tenant.storage_root}"
        )
        for event in tenant.events.all()[:20]:
            self.stdout.write(
                f"  {event.at:%Y-%m-%d %H:%M:%S} {event.action:<14} "
                f"{event.from_status or '-'} -> {event.to_status} by {event.actor}"
            )

    def _export(self, tenant: Tenant, options: dict, actor: str) -> None:
        manifest = backup.tenant_export(
            tenant=tenant,
            target=options["directory"],
            actor=actor,
            allow_problems=options["allow_problems"],
        )
        for problem in manifest.problems:
            self.stderr.write(self.style.WARNING(f"problem: {problem}"))
        self.stdout.write(
            self.style.SUCCESS(
                f"exported {tenant.slug}: {len(manifest.tables)} tables, {manifest.rows} rows, "
                f"{len(manifest.files)} files, {manifest.total_bytes} bytes -> "
                f"{options['directory']}"
            )
        )

    def _import(self, options: dict, actor: str) -> None:
        tenant = backup.tenant_import(
            source=options["directory"],
            slug=options["slug"],
            actor=actor,
            name=options["name"],
            ae_title=options["ae_title"],
            storage_root=options["storage_root"],
        )
        manifest = backup.manifest_verify(options["directory"], check_files=False)
        for problem in manifest.problems:
            self.stderr.write(self.style.WARNING(f"exported with problem: {problem}"))
        custom = [d["domain"] for d in manifest.source.get("domains", []) if not d["is_primary"]]
        if custom:
            self.stdout.write(
                "custom domains not moved (add them once the source no longer has them): "
                + ", ".join(custom)
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"imported {manifest.source['slug']} as {tenant.slug} (AE title "
                f"{tenant.ae_title}, root {tenant.storage_root}): {manifest.rows} rows, "
                f"{len(manifest.files)} files"
            )
        )
        self.stdout.write(f"site:                 {tenant_base_url(tenant)}/")

    def _verify(self, options: dict) -> None:
        manifest = backup.manifest_verify(options["directory"])
        for problem in manifest.problems:
            self.stderr.write(self.style.WARNING(f"exported with problem: {problem}"))
        self.stdout.write(
            self.style.SUCCESS(
                f"{options['directory']}: export of {manifest.source['slug']} made "
                f"{manifest.created_at} by portal {manifest.portal_version}; "
                f"{len(manifest.tables)} tables, {len(manifest.files)} files, "
                f"{manifest.total_bytes} bytes, every checksum matches"
            )
        )
