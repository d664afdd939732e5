"""The public tenant row and its domain, which routing needs before anything else."""

from django.conf import settings
from django.db import transaction

from tenants.models import Domain, Tenant, TenantStatus


def public_tenant_ensure() -> Tenant:
    """Create (or fix up) the row for the `public` schema and the base domain."""
    with transaction.atomic():
        tenant, _ = Tenant.objects.get_or_create(
            schema_name="public",
            defaults={
                "slug": "public",
                "name": "Platform",
                "status": TenantStatus.ACTIVE,
                "storage_root": str(settings.PORTAL_STORAGE_ROOT),
            },
        )
        Domain.objects.filter(tenant=tenant).exclude(domain=settings.PORTAL_BASE_DOMAIN).delete()
        Domain.objects.get_or_create(
            domain=settings.PORTAL_BASE_DOMAIN, defaults={"tenant": tenant, "is_primary": True}
        )
    return tenant
