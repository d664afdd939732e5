"""Reads for the super-admin site: the fleet, with each tenant's figures from its schema."""

from dataclasses import dataclass

from django.db import DatabaseError, connection, transaction
from django.db.models import QuerySet
from django_tenants.utils import quote_schema_name

from tenants import provisioning
from tenants.models import Tenant, TenantStatus


@dataclass(frozen=True)
class TenantFigures:
    users: int | None = None
    media: int | None = None
    used_bytes: int | None = None
    capacity_bytes: int | None = None
    media_above_watermark: int | None = None
    failed_jobs: int | None = None
    audit_events: int | None = None


@dataclass(frozen=True)
class FleetRow:
    tenant: Tenant
    figures: TenantFigures
    migrations: provisioning.MigrationState

    @property
    def needs_attention(self) -> bool:
        return (
            (not self.migrations.is_current and self.tenant.status != TenantStatus.PURGED)
            or bool(self.figures.media_above_watermark)
            or bool(self.figures.failed_jobs)
        )


def tenant_list(*, include_purged: bool = False) -> QuerySet[Tenant]:
    manager = Tenant.all_objects if include_purged else Tenant.objects
    return manager.exclude(schema_name="public").prefetch_related("domains")


def tenant_figures(tenant: Tenant) -> TenantFigures:
    """Counts read straight from the tenant's tables, without switching the search path."""
    schema = quote_schema_name(tenant.schema_name)
    sql = f"""
        SELECT (SELECT count(*) FROM {schema}.accounts_user WHERE is_active),
               (SELECT count(*) FROM {schema}.studies_storagemedium WHERE status <> 'retired'),
               (SELECT coalesce(sum(used_bytes), 0)::bigint FROM {schema}.studies_storagemedium),
               (SELECT coalesce(sum(capacity_bytes), 0)::bigint FROM {schema}.studies_storagemedium
                 WHERE status <> 'retired'),
               (SELECT count(*) FROM {schema}.studies_storagemedium
                 WHERE status = 'online' AND used_bytes * 100 >= capacity_bytes * high_watermark),
               (SELECT count(*) FROM {schema}.jobs_jobrun WHERE status = 'failed'),
               (SELECT count(*) FROM {schema}.audit_auditevent)
    """  # noqa: S608 - the schema name is quoted by django-tenants and never user input
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)
            row = cursor.fetchone()
    except DatabaseError:
        return TenantFigures()  # a broken schema shows as "unknown", the page still renders
    return TenantFigures(*row)


def fleet(*, include_purged: bool = False) -> list[FleetRow]:
    rows = []
    for tenant in tenant_list(include_purged=include_purged):
        if tenant.status == TenantStatus.PURGED:
            rows.append(FleetRow(tenant, TenantFigures(), provisioning.MigrationState(frozenset())))
            continue
        rows.append(
            FleetRow(
                tenant, tenant_figures(tenant), provisioning.migration_state(tenant.schema_name)
            )
        )
    return rows


def schedulable_tenants() -> list[Tenant]:
    """Tenants the singleton may run jobs for: active and with every migration applied."""
    return [
        tenant
        for tenant in Tenant.objects.filter(status=TenantStatus.ACTIVE).exclude(
            schema_name="public"
        )
        if provisioning.migration_state(tenant.schema_name).is_current
    ]
