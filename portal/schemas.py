"""Typed access to the default connection's active schema (django-tenants adds it at runtime)."""

from typing import TYPE_CHECKING, cast

from django.db import connection
from django_tenants.postgresql_backend.base import DatabaseWrapper

if TYPE_CHECKING:
    from tenants.models import Tenant


def tenant_connection() -> DatabaseWrapper:
    return cast(DatabaseWrapper, connection)


def current_schema() -> str:
    """The schema queries run in now: `public` or a tenant's `t_<slug>`."""
    return str(tenant_connection().schema_name)


def current_tenant() -> "Tenant":
    """The Tenant row of the active schema (schema_context() only sets a stand-in)."""
    from tenants.models import Tenant

    tenant = tenant_connection().tenant
    if isinstance(tenant, Tenant):
        return tenant
    return Tenant.all_objects.get(schema_name=current_schema())
