"""Template context of every tenant page: the tenant's accent colour for the header."""

from typing import Any

from django.http import HttpRequest

from configuration.selectors import accent_colour
from portal.schemas import current_schema


def branding(request: HttpRequest) -> dict[str, Any]:
    tenant = getattr(request, "tenant", None)
    # Error pages of unknown or suspended tenants render outside the tenant's schema.
    if tenant is None or tenant.is_public or current_schema() != tenant.schema_name:
        return {}
    return {"tenant_accent": accent_colour()}
