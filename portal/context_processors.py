"""Template context every page needs: which site (super-admin or tenant) is rendering."""

from typing import Any

from django.http import HttpRequest


def portal(request: HttpRequest) -> dict[str, Any]:
    tenant = getattr(request, "tenant", None)
    is_tenant_site = tenant is not None and not tenant.is_public
    return {"current_tenant": tenant if is_tenant_site else None, "is_tenant_site": is_tenant_site}
