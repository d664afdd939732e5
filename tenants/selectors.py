"""Reads for the super-admin site: the fleet, with each tenant's figures from its schema."""

import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.db import DatabaseError, connection, transaction
from django.db.models import QuerySet
from django.db.models.functions import Lower
from django_tenants.utils import quote_schema_name

from studies.models import MediumStatus
from tenants import provisioning
from tenants.models import Tenant, TenantEvent, TenantStatus


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


@dataclass(frozen=True)
class MediumRow:
    """One storage medium of a tenant, as read from its schema."""

    name: str
    kind: str
    status: str
    root: str
    used_bytes: int
    capacity_bytes: int
    high_watermark: int


@dataclass(frozen=True)
class TenantMedia:
    """A tenant's media (retired ones too) and counts of its rows (`failed_jobs` always);
    `error` when they could not be read (a broken schema, a lock or the time limit), the other
    fields then empty; `detail` is the database's message, for logs only."""

    slug: str
    media: tuple[MediumRow, ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)
    error: str = ""
    detail: str = ""

    @property
    def failed_jobs(self) -> int:
        return self.counts.get("failed_jobs", 0)


# What tenant_media can count besides the media: the table and condition of each.
_COUNTABLE = {
    "failed_jobs": "jobs_jobrun WHERE status = 'failed'",
    "users": "accounts_user WHERE is_active",
    "audit_events": "audit_auditevent",
}


def _media_sql(schema_name: str, counts: Iterable[str]) -> str:
    # The schema name is quoted by django-tenants and never user input; the labels are ours.
    schema = quote_schema_name(schema_name)
    columns = "name, kind, status, root, used_bytes, capacity_bytes, high_watermark"
    parts = [f"SELECT {columns} FROM {schema}.studies_storagemedium"]  # noqa: S608
    parts += [
        f"SELECT NULL, '{label}', NULL, NULL, count(*), 0, 0 FROM {schema}.{_COUNTABLE[label]}"  # noqa: S608
        for label in counts
    ]
    return " UNION ALL ".join(parts) + " ORDER BY 1 NULLS FIRST, 2"


def tenant_media(slug: str, schema_name: str, *, also_count: Iterable[str] = ()) -> TenantMedia:
    """The tenant's media and failed job runs (and `also_count` of _COUNTABLE), read from its
    schema without switching the search path: one query, in a savepoint of its own, so a
    broken schema fails this tenant only."""
    counted = ["failed_jobs", *also_count]
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_media_sql(schema_name, counted))
            rows = cursor.fetchall()
    except DatabaseError as error:  # named by psycopg's error: LockNotAvailable, UndefinedTable
        name = type(error.__cause__ or error).__name__
        return TenantMedia(slug, error=name, detail=str(error).strip())
    media = tuple(MediumRow(*row) for row in rows if row[0] is not None)
    return TenantMedia(slug, media, {row[1]: row[4] for row in rows if row[0] is None})


class QueryBudget:
    """The time left for the reads of one transaction (see `time_limited_reads`)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self._limit_ms = 0

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def limit(self) -> bool:
        """Caps the next statements (and their lock waits) at the time left; False when none
        is left."""
        limit_ms = int(self.remaining() * 1000)
        if limit_ms < 1:
            return False
        if limit_ms != self._limit_ms:
            _set_timeouts(str(limit_ms), str(limit_ms))
            self._limit_ms = limit_ms
        return True


def _set_timeouts(statement: str, lock: str) -> None:
    # set_config(..., true) is SET LOCAL: it ends with the transaction that set it.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('statement_timeout', %s, true),"
            " set_config('lock_timeout', %s, true)",
            [statement, lock],
        )


@contextmanager
def time_limited_reads(seconds: float) -> Iterator[QueryBudget]:
    """A transaction whose statements, lock waits included, end within `seconds` in all.

    The limits are SET LOCAL, so they end with this transaction; when it is a savepoint of an
    outer one (tests), the outer transaction's own limits are put back on the way out.
    """
    nested = connection.in_atomic_block
    with transaction.atomic():
        saved: tuple[str, str] | None = None
        if nested:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')"
                )
                saved = cursor.fetchone()
        budget = QueryBudget(seconds)
        budget.limit()
        yield budget
        if saved is not None:
            _set_timeouts(*saved)


def fleet_media(
    tenants: Iterable[tuple[str, str]], budget: QueryBudget | None = None
) -> list[TenantMedia]:
    """`tenant_media` of each (slug, schema name), without switching the search path. With a
    budget, each query gets what is left of it, and tenants not reached in time say so."""
    results = []
    for slug, schema_name in tenants:
        if budget is not None and not budget.limit():
            results.append(TenantMedia(slug, error="not read in time"))
            continue
        results.append(tenant_media(slug, schema_name))
    return results


def tenant_figures(tenant: Tenant) -> TenantFigures:
    """Counts read straight from the tenant's tables (one query), without switching the
    search path; all unknown when its schema is broken."""
    read = tenant_media(tenant.slug, tenant.schema_name, also_count=("users", "audit_events"))
    if read.error:
        return TenantFigures()  # a broken schema shows as "unknown", the page still renders
    current = [m for m in read.media if m.status != MediumStatus.RETIRED]
    return TenantFigures(
        users=read.counts["users"],
        media=len(current),
        used_bytes=sum(m.used_bytes for m in read.media),
        capacity_bytes=sum(m.capacity_bytes for m in current),
        media_above_watermark=sum(
            1
            for m in read.media
            if m.status == MediumStatus.ONLINE
            and m.used_bytes * 100 >= m.capacity_bytes * m.high_watermark
        ),
        failed_jobs=read.failed_jobs,
        audit_events=read.counts["audit_events"],
    )


def fleet(*, include_purged: bool = False) -> list[FleetRow]:
    """The fleet page's rows, by name (what the page shows), then slug."""
    rows = []
    tenants = tenant_list(include_purged=include_purged).order_by(Lower("name"), "slug")
    for tenant in tenants:
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


def ae_title_holder(title: str, *, besides: Tenant | None = None) -> Tenant | None:
    """The tenant, other than `besides`, that holds `title` or held it once, compared without
    case (purged tenants included: a title is never reused)."""
    tenants = Tenant.all_objects.all()
    events = TenantEvent.objects.filter(
        action="update", details__changes__ae_title__0__iexact=title
    )
    if besides is not None and besides.pk is not None:
        tenants, events = tenants.exclude(pk=besides.pk), events.exclude(tenant=besides)
    holder = tenants.filter(ae_title__iexact=title).first()
    if holder is None:
        event = events.select_related("tenant").first()
        holder = event.tenant if event is not None else None
    return holder
