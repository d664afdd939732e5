"""Reads for the super-admin site: the fleet, with each tenant's figures from its schema."""

import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.db.models import F, Q, QuerySet
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
    media, used, capacity, full = media_totals(read.media)
    return TenantFigures(
        users=read.counts["users"],
        media=media,
        used_bytes=used,
        capacity_bytes=capacity,
        media_above_watermark=full,
        failed_jobs=read.failed_jobs,
        audit_events=read.counts["audit_events"],
    )


def media_totals(media: Iterable[MediumRow]) -> tuple[int, int, int, int]:
    """(media in use, bytes on all media, capacity of those in use, online ones above their
    high watermark): retired media count for their bytes only."""
    media = list(media)
    current = [m for m in media if m.status != MediumStatus.RETIRED]
    full = sum(
        1
        for m in media
        if m.status == MediumStatus.ONLINE
        and m.used_bytes * 100 >= m.capacity_bytes * m.high_watermark
    )
    return (
        len(current),
        sum(m.used_bytes for m in media),
        sum(m.capacity_bytes for m in current),
        full,
    )


FLEET_SORTS: dict[str, tuple[Any, ...]] = {
    "name": (Lower("name"), "slug"),
    "-name": (Lower("name").desc(), "-slug"),
    "created": ("created_at", "pk"),
    "-created": ("-created_at", "-pk"),
    "used": (F("fleet_figures__used_bytes").asc(nulls_first=True), "slug"),
    "-used": (F("fleet_figures__used_bytes").desc(nulls_last=True), "slug"),
    "status": ("status", Lower("name"), "pk"),
}
# What needs the super-admin: a schema behind or unreadable, failed jobs, a full medium.
UNREADABLE = Q(fleet_figures__isnull=False) & ~Q(fleet_figures__error="")  # not a missing row
ATTENTION = (
    Q(fleet_figures__missing_migrations__gt=0)
    | Q(fleet_figures__failed_jobs__gt=0)
    | Q(fleet_figures__media_above_watermark__gt=0)
    | UNREADABLE
)
FLEET_FLAGS = {
    "attention": ATTENTION,
    "over-quota": Q(fleet_figures__used_bytes__gt=F("quota_bytes")),
    "failed-jobs": Q(fleet_figures__failed_jobs__gt=0),
    "behind": Q(fleet_figures__missing_migrations__gt=0) | UNREADABLE,
    "full-media": Q(fleet_figures__media_above_watermark__gt=0),
    "unmeasured": Q(fleet_figures__isnull=True),
}


def fleet(
    *,
    include_purged: bool = False,
    search: str = "",
    status: str = "",
    flag: str = "",
    sort: str = "name",
) -> QuerySet[Tenant]:
    """The fleet page's tenants with their figures (kept by tenants/figures.py), filtered and
    sorted in SQL: a page of them costs the same few queries at any tenant count."""
    tenants = tenant_list(include_purged=include_purged or status == TenantStatus.PURGED)
    tenants = tenants.select_related("fleet_figures")
    if search:
        tenants = tenants.filter(
            Q(name__icontains=search) | Q(slug__icontains=search) | Q(ae_title__iexact=search)
        )
    if status:
        tenants = tenants.filter(status=status)
    if flag in FLEET_FLAGS:
        tenants = tenants.filter(FLEET_FLAGS[flag])
        if flag != "unmeasured":
            tenants = tenants.exclude(status=TenantStatus.PURGED)
    return tenants.order_by(*FLEET_SORTS.get(sort, FLEET_SORTS["name"]))


def fleet_attention() -> int:
    """How many tenants need attention (one query)."""
    return tenant_list().exclude(status=TenantStatus.PURGED).filter(ATTENTION).count()


def schedulable_tenants() -> list[Tenant]:
    """Tenants the singleton may run jobs for: active and with every migration applied.

    From the fleet figures (one query); a tenant whose figures are missing or were counted
    against other migrations is checked in its schema."""
    from tenants.figures import migrations_digest

    active = Tenant.objects.filter(status=TenantStatus.ACTIVE).exclude(schema_name="public")
    rows = active.select_related("fleet_figures").order_by("pk")
    digest = migrations_digest()
    schedulable = []
    for tenant in rows:
        figures = getattr(tenant, "fleet_figures", None)
        if figures is not None and figures.migrations_digest == digest and not figures.error:
            if figures.missing_migrations == 0:
                schedulable.append(tenant)
        elif provisioning.migration_state(tenant.schema_name).is_current:
            schedulable.append(tenant)
    return schedulable


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
