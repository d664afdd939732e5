"""Demo data for `make run`: a super-admin and the tenants acme and globex, idempotently."""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django_tenants.utils import schema_context

from accounts.models import User
from accounts.services import user_create
from tenants import services
from tenants.links import public_base_url, tenant_base_url
from tenants.models import Tenant

DEMO_TENANTS = [("acme", "Acme Hospital", "ACME"), ("globex", "Globex Clinic", "GLOBEX")]


def demo_password() -> str:
    """PORTAL_DEMO_PASSWORD, else one generated once and kept under .var/ for later runs."""
    if os.environ.get("PORTAL_DEMO_PASSWORD"):
        return os.environ["PORTAL_DEMO_PASSWORD"]
    stored = Path(settings.BASE_DIR) / ".var" / "demo-password"
    if stored.is_file():
        return stored.read_text().strip()
    stored.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    stored.write_text(password + "\n")
    stored.chmod(0o600)
    return password


def _ensure_user(username: str, email: str, password: str, **extra: object) -> None:
    user = User.objects.filter(username=username).first()
    if user is None:
        user_create(username=username, email=email, password=password, **extra)  # type: ignore[arg-type]
    elif not user.check_password(password):
        user.set_password(password)
        user.save(update_fields=["password"])


class Command(BaseCommand):
    help = (
        "Create the demo super-admin and tenants acme and globex with their admins "
        "(login 'admin'). Development only: refuses to run unless DEBUG is on."
    )

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("demo accounts exist only in development (DEBUG=true).")
        password = demo_password()
        _ensure_user("admin", f"admin@{settings.PORTAL_BASE_DOMAIN}", password, is_superuser=True)
        lines = [f"  super-admin  {public_base_url()}/   login admin / {password}"]
        for slug, name, ae_title in DEMO_TENANTS:
            tenant = Tenant.all_objects.filter(slug=slug).first()
            if tenant is not None and not tenant.is_usable:
                lines.append(f"  {slug:<11}  is {tenant.status}; not touched")
                continue
            if tenant is None:
                tenant = self._create(slug, name, ae_title, password)
            with schema_context(tenant.schema_name):
                _ensure_user("admin", f"admin@{slug}.example", password, role="admin")
            lines.append(
                f"  {slug:<11}  {tenant_base_url(tenant)}/   login admin / {password}"
                f"   (AE title {tenant.ae_title})"
            )
        self.stdout.write("Demo accounts (development only):\n" + "\n".join(lines))

    def _create(self, slug: str, name: str, ae_title: str, password: str) -> Tenant:
        try:
            return services.tenant_create(
                slug=slug,
                name=name,
                ae_title=ae_title,
                admin_email=f"admin@{slug}.example",
                admin_password=password,
                created_by="demo",
            ).tenant
        except ValidationError as error:
            raise CommandError(
                f"cannot create demo tenant {slug}: {'; '.join(error.messages)} "
                "(left over from an earlier database? `make clean` starts afresh)"
            ) from None
