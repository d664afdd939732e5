"""Absolute URLs of tenant sites, for links that leave the request (set-password mails)."""

from django.conf import settings

from tenants.models import Tenant


def tenant_base_url(tenant: Tenant) -> str:
    """The tenant's site root without a trailing slash, as the routing mode exposes it."""
    if settings.PORTAL_TENANT_URL_TEMPLATE:
        return settings.PORTAL_TENANT_URL_TEMPLATE.format(slug=tenant.slug).rstrip("/")
    scheme = settings.PORTAL_URL_SCHEME
    port = f":{settings.PORTAL_URL_PORT}" if settings.PORTAL_URL_PORT else ""
    if settings.PORTAL_TENANT_ROUTING == "path":
        return f"{scheme}://{settings.PORTAL_BASE_DOMAIN}{port}/t/{tenant.slug}"
    primary = tenant.get_primary_domain()
    host = primary.domain if primary else f"{tenant.slug}.{settings.PORTAL_BASE_DOMAIN}"
    return f"{scheme}://{host}{port}"


def tenant_url(tenant: Tenant, path: str = "/") -> str:
    return tenant_base_url(tenant) + path


def public_base_url() -> str:
    port = f":{settings.PORTAL_URL_PORT}" if settings.PORTAL_URL_PORT else ""
    return f"{settings.PORTAL_URL_SCHEME}://{settings.PORTAL_BASE_DOMAIN}{port}"
