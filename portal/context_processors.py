"""Template context every page needs: which site is rendering and what the user may do."""

from typing import Any

from django.http import HttpRequest

from accounts.permissions import ROLE_CAPABILITIES


def portal(request: HttpRequest) -> dict[str, Any]:
    tenant = getattr(request, "tenant", None)
    is_tenant_site = tenant is not None and not tenant.is_public
    user = getattr(request, "user", None)
    caps: frozenset[str] = frozenset()
    if is_tenant_site and user is not None and user.is_authenticated and user.is_active:
        caps = frozenset(str(c) for c in ROLE_CAPABILITIES.get(getattr(user, "role", ""), ()))
    return {
        "current_tenant": tenant if is_tenant_site else None,
        "is_tenant_site": is_tenant_site,
        "caps": caps,
    }
