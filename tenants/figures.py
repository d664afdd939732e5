"""The fleet's figures, kept by a periodic pass instead of counted per request.

`figures_refresh` reads, for each tenant, its media, active users and failed job runs, and
which migrations its schema lacks, by schema-qualified SQL (`tenants.selectors.tenant_media`:
the search path is never switched), and writes one `FleetFigures` row per tenant with one
upsert per chunk. The fleet page, `/health/ready`, `/metrics` and the periodic fan-out then
read every tenant from one query, whatever the count.

The singleton runs the pass every minute (`tenants.refresh_fleet_figures`); each run takes
the tenants measured longest ago first and stops at its time budget, so with more tenants
than one run reaches, the figures are at most a few runs old, never missing. Creating a
tenant, changing its status and `migrate_portal` refresh the tenants concerned at once.
Reading a schema's tables fills the connection's catalogue caches, so the pass starts a
fresh connection every PORTAL_DB_SCHEMAS_PER_CONNECTION tenants.
"""

import hashlib
import logging
import time
from collections.abc import Iterable
from datetime import timedelta
from functools import cache

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone
from django_tenants.utils import quote_schema_name

from portal import health
from studies.models import MediumKind, MediumStatus
from tenants import provisioning
from tenants.models import FleetFigures, Tenant, TenantStatus
from tenants.selectors import media_totals, tenant_media, time_limited_reads

logger = logging.getLogger(__name__)

STALE_AFTER_SECONDS = 120
# The reads of one tenant, lock waits included: a locked or slow schema fails alone.
FIGURES_TENANT_SECONDS = 3.0
TIME_BUDGET_SECONDS = 30.0
CHUNK = 200
MEASURED_STATUSES = (TenantStatus.PROVISIONING, TenantStatus.ACTIVE, TenantStatus.SUSPENDED)


@cache
def migrations_digest() -> str:
    """Names the set of tenant migrations on disk: figures counted against another set
    (before a release) say nothing about the migrations."""
    names = sorted(f"{app}.{name}" for app, name in provisioning.expected_tenant_migrations())
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def _missing_migrations(schema_name: str) -> tuple[int, str]:
    expected = provisioning.expected_tenant_migrations()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"SELECT app, name FROM {quote_schema_name(schema_name)}.django_migrations"  # noqa: S608
        )
        missing = expected - set(cursor.fetchall())
    return len(missing), provisioning.MigrationState(frozenset(missing)).describe()


def measure(
    tenant: Tenant, *, hung: set[str] | None = None, points: list[str] | None = None
) -> FleetFigures:
    """One tenant's figures, read now (two queries, each in a savepoint of its own), its
    online filesystem media write-probed. `hung`: mount points whose probe timed out earlier
    in this pass; media on them are not waited for again (they time out as well)."""
    now = timezone.now()
    read = tenant_media(tenant.slug, tenant.schema_name, also_count=("users",))
    if read.error:
        return FleetFigures(
            tenant=tenant,
            error=read.error[:200],
            missing_migrations=len(provisioning.expected_tenant_migrations()),
            migrations_note="schema not readable",
            migrations_digest=migrations_digest(),
            measured_at=now,
        )
    try:
        missing, note = _missing_migrations(tenant.schema_name)
    except DatabaseError as error:
        missing = len(provisioning.expected_tenant_migrations())
        note = f"migrations not readable ({type(error.__cause__ or error).__name__})"
    media, used, capacity, full = media_totals(read.media)
    writable = [
        m.root
        for m in read.media
        if m.status == MediumStatus.ONLINE and m.kind == MediumKind.FILESYSTEM
    ]
    probes = _probes(writable, hung, points)
    return FleetFigures(
        tenant=tenant,
        users=read.counts.get("users", 0),
        media=media,
        used_bytes=used,
        capacity_bytes=capacity,
        media_above_watermark=full,
        failed_jobs=read.failed_jobs,
        media_detail=[
            {
                "name": m.name,
                "kind": m.kind,
                "status": m.status,
                "root": m.root,
                "used_bytes": m.used_bytes,
                "capacity_bytes": m.capacity_bytes,
                "probe": probes.get(m.root),
            }
            for m in read.media
        ],
        missing_migrations=missing,
        migrations_note=note[:300],
        migrations_digest=migrations_digest(),
        measured_at=now,
    )


def _probes(
    roots: list[str], hung: set[str] | None, points: list[str] | None
) -> dict[str, str | None]:
    if not roots:
        return {}
    points = points if points is not None else health.mount_points()
    mounts = {root: health.mount_of(root, points) for root in roots}
    asked = [root for root in roots if hung is None or mounts[root] not in hung]
    found = health.probe_roots(asked, settings.PORTAL_HEALTH_TIMEOUT) if asked else {}
    for root in roots:
        if root not in found:
            found[root] = "timed out (its file system did not answer this pass)"
        elif found[root] == "timed out" and hung is not None:
            hung.add(mounts[root])
    return found


_FIELDS = [
    f.name for f in FleetFigures._meta.concrete_fields if f.name != "tenant" and not f.primary_key
]


def _save(rows: list[FleetFigures]) -> None:
    if rows:
        FleetFigures.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["tenant"], update_fields=_FIELDS
        )


def due_tenants(stale_after: float = STALE_AFTER_SECONDS) -> QuerySet[Tenant]:
    """Tenants without figures or with figures older than `stale_after` seconds (or counted
    against other migrations), oldest first."""
    cutoff = timezone.now() - timedelta(seconds=stale_after)
    return (
        Tenant.objects.filter(status__in=MEASURED_STATUSES)
        .exclude(schema_name="public")
        .filter(
            Q(fleet_figures__isnull=True)
            | Q(fleet_figures__measured_at__lte=cutoff)
            | ~Q(fleet_figures__migrations_digest=migrations_digest())
        )
        .order_by(F("fleet_figures__measured_at").asc(nulls_first=True), "pk")
    )


def figures_refresh(
    *,
    tenants: Iterable[Tenant] | None = None,
    stale_after: float = STALE_AFTER_SECONDS,
    time_budget: float | None = TIME_BUDGET_SECONDS,
) -> int:
    """Measure `tenants` (default: the due ones) until the time budget is spent; how many."""
    started = time.monotonic()
    todo = list(tenants) if tenants is not None else list(due_tenants(stale_after))
    budget = max(1, settings.PORTAL_DB_SCHEMAS_PER_CONNECTION)
    done, chunk = 0, []
    hung: set[str] = set()
    points = health.mount_points()
    for tenant in todo:
        if time_budget is not None and time.monotonic() - started > time_budget:
            break
        with time_limited_reads(FIGURES_TENANT_SECONDS):
            chunk.append(measure(tenant, hung=hung, points=points))
        done += 1
        if len(chunk) >= CHUNK:
            _save(chunk)
            chunk = []
        if done % budget == 0 and not connection.in_atomic_block:
            connection.close()  # a fresh backend: its catalogue caches start empty
    _save(chunk)
    if done < len(todo):
        logger.info("fleet figures: %d of %d due tenants measured in time", done, len(todo))
    return done


def figures_refresh_tenant(tenant: Tenant) -> None:
    """After a change to one tenant (created, suspended, migrated): its row at once. A
    purged tenant keeps no figures."""
    if tenant.status not in MEASURED_STATUSES:
        FleetFigures.objects.filter(tenant=tenant).delete()
        return
    with time_limited_reads(FIGURES_TENANT_SECONDS):
        figures = measure(tenant)
    _save([figures])


# -- the upgrade gate ---------------------------------------------------------------------

GATE_SECONDS = 5.0
_gate: dict[str, tuple[float, bool]] = {}


def schema_behind(tenant: Tenant) -> bool:
    """Whether the tenant's schema lacks migrations this code has (an upgrade under way):
    its site answers 503 and the gateway a transient rejection until `migrate_portal` has
    reached it, instead of failing on a missing column. From the fleet figures when they
    were counted against this code's migrations, else from the schema itself; remembered
    per process for GATE_SECONDS."""
    now = time.monotonic()
    known = _gate.get(tenant.schema_name)
    if known is not None and now - known[0] < GATE_SECONDS:
        return known[1]
    row = (
        FleetFigures.objects.filter(tenant_id=tenant.pk)
        .values_list("missing_migrations", "migrations_digest", "error")
        .first()
    )
    if row is not None and row[1] == migrations_digest() and not row[2] and row[0] == 0:
        behind = False
    else:
        # "Behind" (or not known) is confirmed in the schema itself: a reading the pass took
        # before `migrate_portal` reached the schema must not keep it closed.
        try:
            with transaction.atomic():
                behind = bool(provisioning.migration_state(tenant.schema_name).missing)
        except DatabaseError:
            behind = False  # an unreadable schema fails on its own, with its own error
    _gate[tenant.schema_name] = (now, behind)
    return behind
