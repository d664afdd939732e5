"""Usage metering for billing: one `UsageRecord` per tenant and UTC day, read by the super-admin.

Each figure is read from the tenant's own tables by schema-qualified SQL (like the fleet's
`tenant_figures`), so metering runs in `public` and never switches the search path. Only
counts and sums leave the tenant's schema; no name, UID or other PHI does. A day runs from
00:00 to 24:00 UTC, whatever `TIME_ZONE` says.

How each figure is counted, and its limits:

- `bytes_by_medium`, `bytes_total`: `StorageMedium.used_bytes` of every medium of the tenant
  (retired ones too), i.e. the last measurement of the storage-usage job (every 15 minutes)
  plus what ingest and deletion added or took since. It is a snapshot, not a daily average,
  and it cannot be measured again later: it is taken while the day is running and once more
  at the first computation after the day ended (the meter's run just after midnight); later
  recomputations of that day keep it. Days computed for the first time long afterwards get
  the measurement of that moment.
- `studies_added`, `instances_added`: `Study.received_at` / `Instance.received_at` within the
  day. A study counts on the day its first instance arrived; instances added to it later
  count on their own days; an instance replaced by a re-sent copy counts once, when first
  stored. Rows deleted again before the day is computed are gone and are not counted as
  added (the running computation of today catches most of them). Both columns are indexed.
- `studies_deleted`, `instances_deleted`: the `study.delete` audit rows of the day and the
  `instances` number in their details. `study_delete` writes that row for every deletion,
  from the study page, the API and the retention job alike (the retention job's extra
  `retention.delete` row is therefore not counted again). Instances are only ever removed
  with their study.
- `dicomweb_requests`, `dicomweb_bytes_served`: the successful `dicomweb.retrieve` audit rows
  (WADO-RS and WADO-URI; QIDO-RS searches are not retrievals) and the `bytes` in their
  details: the payload the request asked for and the server began to send (files, frames,
  bulk data, metadata JSON, rendered images), without multipart framing; a download the
  client broke off is counted whole. HEAD requests count as requests with no bytes. DIMSE C-GET and
  C-MOVE are not DICOMweb and are not counted.
- `job_seconds`: the run time (`finished_at - started_at`) of the tenant's periodic job runs
  that finished within the day, failed ones included; ingest tasks are not job runs and
  are not counted.

Which tenants are metered: active and suspended ones (a suspended tenant's data is still
stored, so its storage stays billable; its jobs do not run). Provisioning, deleted (grace
period) and purged tenants are not; their existing records stay.
"""

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from types import SimpleNamespace
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django_tenants.utils import quote_schema_name

from portal.csv_export import csv_lines, spreadsheet_safe
from portal.units import size_text
from tenants.models import Tenant, TenantStatus, UsageRecord

METERED_STATUSES = (TenantStatus.ACTIVE, TenantStatus.SUSPENDED)
# How far back a meter that was down catches up on days without a final record.
CATCH_UP_DAYS = 35
CHART_DAYS = 30
CSV_COLUMNS = [
    "day",
    "tenant",
    "tenant_name",
    "bytes_total",
    "bytes_by_medium",
    "studies_added",
    "studies_deleted",
    "instances_added",
    "instances_deleted",
    "dicomweb_requests",
    "dicomweb_bytes_served",
    "job_seconds",
    "computed_at",
]
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def utc_today() -> date:
    return timezone.now().astimezone(UTC).date()


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The UTC instants a day starts and ends at (end excluded)."""
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


# -- computing --------------------------------------------------------------------------------


def _day_activity(tenant: Tenant, start: datetime, end: datetime) -> dict[str, int]:
    schema = quote_schema_name(tenant.schema_name)
    sql = f"""
        WITH deleted AS (
            SELECT count(*) AS studies,
                   coalesce(sum(CASE WHEN jsonb_typeof(details -> 'instances') = 'number'
                                     THEN (details ->> 'instances')::numeric END), 0) AS instances
              FROM {schema}.audit_auditevent
             WHERE action = 'study.delete' AND outcome = 'success'
               AND at >= %(start)s AND at < %(end)s
        ), served AS (
            SELECT count(*) AS requests,
                   coalesce(sum(CASE WHEN jsonb_typeof(details -> 'bytes') = 'number'
                                      AND details ->> 'method' IS DISTINCT FROM 'HEAD'
                                     THEN (details ->> 'bytes')::numeric END), 0) AS bytes
              FROM {schema}.audit_auditevent
             WHERE action = 'dicomweb.retrieve' AND outcome = 'success'
               AND at >= %(start)s AND at < %(end)s
        )
        SELECT (SELECT count(*) FROM {schema}.studies_study
                 WHERE received_at >= %(start)s AND received_at < %(end)s),
               (SELECT count(*) FROM {schema}.studies_instance
                 WHERE received_at >= %(start)s AND received_at < %(end)s),
               deleted.studies, round(deleted.instances)::bigint,
               served.requests, round(served.bytes)::bigint,
               (SELECT round(coalesce(sum(extract(epoch FROM finished_at - started_at)), 0))
                  ::bigint FROM {schema}.jobs_jobrun
                 WHERE finished_at >= %(start)s AND finished_at < %(end)s)
          FROM deleted, served
    """  # noqa: S608 - the schema name is quoted by django-tenants and never user input
    with connection.cursor() as cursor:
        cursor.execute(sql, {"start": start, "end": end})
        row = cursor.fetchone()
    names = (
        "studies_added",
        "instances_added",
        "studies_deleted",
        "instances_deleted",
        "dicomweb_requests",
        "dicomweb_bytes_served",
        "job_seconds",
    )
    return {name: max(int(value or 0), 0) for name, value in zip(names, row, strict=True)}


def _media_bytes(tenant: Tenant) -> dict[str, int]:
    schema = quote_schema_name(tenant.schema_name)
    sql = f"SELECT name, used_bytes FROM {schema}.studies_storagemedium ORDER BY name"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return {name: max(int(used), 0) for name, used in cursor.fetchall()}


def usage_record_compute(*, tenant: Tenant, day: date) -> UsageRecord:
    """Count `tenant`'s usage on the UTC `day` from its tables and replace that day's row.

    Safe to repeat: the row is upserted under a lock. The storage snapshot is kept once the
    row was computed after the day ended (see the module docstring).
    """
    if day > utc_today():
        raise ValueError(f"{day} has not begun yet")
    start, end = day_bounds(day)
    with transaction.atomic():
        existing = UsageRecord.objects.select_for_update().filter(tenant=tenant, day=day).first()
        activity = _day_activity(tenant, start, end)
        if existing is None or existing.computed_at < end:
            media = _media_bytes(tenant)
        else:
            media = existing.bytes_by_medium
        record, _created = UsageRecord.objects.update_or_create(
            tenant=tenant,
            day=day,
            defaults={
                **activity,
                "bytes_by_medium": media,
                "bytes_total": sum(media.values()),
                "computed_at": timezone.now(),
            },
        )
    return record


def metered_tenants() -> QuerySet[Tenant]:
    """Tenants that get a record: active and suspended (their data is still stored)."""
    return Tenant.objects.filter(status__in=METERED_STATUSES).exclude(schema_name="public")


def days_due(tenants: Iterable[Tenant], *, today: date) -> dict[int, list[date]]:
    """Per tenant: every day since its last final record (computed after the day ended), up
    to `CATCH_UP_DAYS` back, and today. A meter that was down for days fills the gap when it
    runs again, instead of leaving holes in the bill."""
    earliest = today - timedelta(days=CATCH_UP_DAYS)
    records = UsageRecord.objects.filter(day__gte=earliest, day__lt=today)
    final: dict[int, set[date]] = {}
    for tenant_id, day, computed_at in records.values_list("tenant_id", "day", "computed_at"):
        if computed_at >= day_bounds(day)[1]:
            final.setdefault(tenant_id, set()).add(day)
    due = {}
    for tenant in tenants:
        created = tenant.created_at.astimezone(UTC).date()
        first = max(earliest, created)
        done = final.get(tenant.pk, set())
        missing = [
            first + timedelta(days=n)
            for n in range((today - first).days)
            if first + timedelta(days=n) not in done
        ]
        due[tenant.pk] = [*missing, today]
    return due


# -- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageFilter:
    first: date | None = None
    last: date | None = None
    tenant: Tenant | None = None


def usage_filter_parse(query: Mapping[str, str]) -> UsageFilter:
    """`from`, `to` (YYYY-MM-DD, both included) and `tenant` (a slug) of a query string."""
    errors: dict[str, str] = {}
    days: dict[str, date | None] = {}
    for key in ("from", "to"):
        value = (query.get(key) or "").strip()
        days[key] = None
        if value:
            try:
                if not _DAY.match(value):
                    raise ValueError(value)
                days[key] = date.fromisoformat(value)
            except ValueError:
                errors[key] = f"“{key}” is a day as YYYY-MM-DD."
    first, last = days["from"], days["to"]
    if first and last and first > last:
        errors["to"] = "“to” is before “from”."
    tenant = None
    slug = (query.get("tenant") or "").strip()
    if slug:
        tenant = Tenant.all_objects.exclude(schema_name="public").filter(slug=slug).first()
        if tenant is None:
            errors["tenant"] = "There is no tenant with that slug."
    if errors:
        raise ValidationError(errors)
    return UsageFilter(first=first, last=last, tenant=tenant)


def usage_records(
    *, tenant: Tenant | None = None, first: date | None = None, last: date | None = None
) -> QuerySet[UsageRecord]:
    """Records oldest day first, then by tenant slug; `first` and `last` are included."""
    records = UsageRecord.objects.select_related("tenant").order_by("day", "tenant__slug")
    if tenant is not None:
        records = records.filter(tenant=tenant)
    if first is not None:
        records = records.filter(day__gte=first)
    if last is not None:
        records = records.filter(day__lte=last)
    return records


@dataclass(frozen=True)
class UsageChart:
    """Daily bars of one figure, summed over the records given (one tenant or the fleet)."""

    key: str
    title: str
    is_bytes: bool
    days: list[tuple[date, int]]

    # The drawing's coordinates: a left margin for the scale, the bars in PLOT_WIDTH units
    # whatever the number of days, so that labels keep their size (about 11 px) on screen.
    MARGIN, PLOT_WIDTH, PLOT_TOP, PLOT_BOTTOM = 56, 300, 8, 100

    @property
    def width(self) -> int:
        return self.MARGIN + self.PLOT_WIDTH

    @property
    def step(self) -> float:
        return self.PLOT_WIDTH / max(len(self.days), 1)

    @property
    def ticks(self) -> list[dict[str, Any]]:
        """The scale: 0, half the highest day and the highest day, with their lines."""
        span = self.PLOT_BOTTOM - self.PLOT_TOP
        return [
            {"y": round(self.PLOT_BOTTOM - span * share, 1), "text": self.text(self.peak * share)}
            for share in ((0, 0.5, 1) if self.peak else (0,))
        ]

    @property
    def labels(self) -> list[dict[str, Any]]:
        """Some days under the bars: about six, the last one always."""
        every = max(1, -(-len(self.days) // 6))
        count = len(self.days)
        return [
            {"x": round(self.MARGIN + (index + 0.5) * self.step, 1), "day": day}
            for index, (day, _value) in enumerate(self.days)
            if (count - 1 - index) % every == 0
        ]

    @property
    def total(self) -> int:
        return sum(value for _day, value in self.days)

    @property
    def peak(self) -> int:
        return max((value for _day, value in self.days), default=0)

    def text(self, value: int | float) -> str:
        return str(size_text(value)) if self.is_bytes else f"{value:,}"

    @property
    def peak_text(self) -> str:
        return self.text(self.peak)

    @property
    def total_text(self) -> str:
        return self.text(self.total)

    @property
    def bars(self) -> list[dict[str, Any]]:
        """One bar a day, its height to scale against the highest day."""
        span, bars = self.PLOT_BOTTOM - self.PLOT_TOP, []
        for index, (day, value) in enumerate(self.days):
            tall = round(span * value / self.peak, 1) if self.peak else 0.0
            bars.append(
                {
                    "day": day,
                    "value": value,
                    "text": self.text(value),
                    "x": round(self.MARGIN + index * self.step + self.step * 0.1, 1),
                    "width": round(max(self.step * 0.8, 0.5), 2),
                    "y": round(self.PLOT_BOTTOM - tall, 1),
                    "height": tall,
                }
            )
        return bars


CHARTS = {
    "bytes_total": ("Stored", True),
    "dicomweb_bytes_served": ("DICOMweb served", True),
    "instances_added": ("Instances received", False),
}


def usage_chart(
    records: Iterable[UsageRecord] | Iterable[SimpleNamespace],
    *,
    figure: str,
    first: date,
    last: date,
) -> UsageChart:
    title, is_bytes = CHARTS[figure]
    sums: dict[date, int] = {}
    for record in records:
        sums[record.day] = sums.get(record.day, 0) + int(getattr(record, figure))
    count = (last - first).days + 1
    days = [
        (first + timedelta(days=n), sums.get(first + timedelta(days=n), 0)) for n in range(count)
    ]
    return UsageChart(key=f"usage-{figure}", title=title, is_bytes=is_bytes, days=days)


@dataclass(frozen=True)
class TenantUsageTotal:
    """One tenant's usage over a window: latest storage, sums of the rest."""

    tenant: Tenant
    bytes_total: int = 0
    studies_added: int = 0
    studies_deleted: int = 0
    instances_added: int = 0
    instances_deleted: int = 0
    dicomweb_requests: int = 0
    dicomweb_bytes_served: int = 0
    job_seconds: int = 0

    @property
    def job_minutes(self) -> float:
        return self.job_seconds / 60


SUMMED = (
    "studies_added",
    "studies_deleted",
    "instances_added",
    "instances_deleted",
    "dicomweb_requests",
    "dicomweb_bytes_served",
    "job_seconds",
)


def usage_totals(records: Iterable[UsageRecord]) -> list[TenantUsageTotal]:
    """Per tenant (by slug): the last day's stored bytes and the sums of the other figures."""
    per_tenant: dict[int, dict[str, Any]] = {}
    for record in sorted(records, key=lambda r: r.day):
        entry = per_tenant.setdefault(record.tenant_id, {"tenant": record.tenant})
        entry["bytes_total"] = record.bytes_total
        for name in SUMMED:
            entry[name] = entry.get(name, 0) + getattr(record, name)
    totals = [TenantUsageTotal(**entry) for entry in per_tenant.values()]
    return sorted(totals, key=lambda total: total.tenant.slug)


@dataclass(frozen=True)
class UsageOverview:
    """What the fleet dashboard and a tenant's usage page show for a window of days."""

    first: date
    last: date
    charts: list[UsageChart]
    totals: list[TenantUsageTotal]
    records: list[UsageRecord]


MAX_WINDOW_DAYS = 366


def usage_overview(
    *,
    tenant: Tenant | None = None,
    days: int = CHART_DAYS,
    today: date | None = None,
    first: date | None = None,
    last: date | None = None,
) -> UsageOverview:
    """The days from `first` to `last` (by default the last `days` up to today, UTC), for one
    tenant or the whole fleet; one query. A window is at most MAX_WINDOW_DAYS long."""
    last = last or (first + timedelta(days=days - 1) if first else today or utc_today())
    first = first or last - timedelta(days=days - 1)
    if (last - first).days >= MAX_WINDOW_DAYS:
        raise ValidationError({"from": f"Choose at most {MAX_WINDOW_DAYS} days at once."})
    records = list(usage_records(tenant=tenant, first=first, last=last))
    charts = [usage_chart(records, figure=figure, first=first, last=last) for figure in CHARTS]
    return UsageOverview(
        first=first, last=last, charts=charts, totals=usage_totals(records), records=records
    )


def usage_fleet_overview(
    *, days: int = CHART_DAYS, today: date | None = None, top: int = 10
) -> "UsageOverview":
    """The fleet page's usage: the charts summed per day, and the `top` tenants by stored
    bytes, all aggregated in SQL (three queries at any tenant count)."""
    from django.db.models import OuterRef, Subquery, Sum

    last = today or utc_today()
    first = last - timedelta(days=days - 1)
    window = UsageRecord.objects.filter(day__gte=first, day__lte=last)
    per_day = [
        SimpleNamespace(**row)
        for row in window.order_by().values("day").annotate(**{f: Sum(f) for f in CHARTS})
    ]
    charts = [usage_chart(per_day, figure=figure, first=first, last=last) for figure in CHARTS]
    latest = window.filter(tenant=OuterRef("tenant")).order_by("-day").values("bytes_total")[:1]
    rows = list(
        window.order_by()
        .values("tenant")
        .annotate(**{name: Sum(name) for name in SUMMED}, bytes_total=Subquery(latest))
        .order_by("-bytes_total", "tenant")[:top]
    )
    tenants = Tenant.all_objects.in_bulk([row["tenant"] for row in rows])
    totals = [TenantUsageTotal(tenant=tenants[row.pop("tenant")], **row) for row in rows]
    return UsageOverview(first=first, last=last, charts=charts, totals=totals, records=[])


# -- CSV --------------------------------------------------------------------------------------


def usage_csv_rows(records: QuerySet[UsageRecord]) -> Iterator[str]:
    """The header, then one line per tenant and day; text cells cannot become formulas."""
    rows = (
        [
            record.day.isoformat(),
            spreadsheet_safe(record.tenant.slug),
            spreadsheet_safe(record.tenant.name),
            record.bytes_total,
            spreadsheet_safe(json.dumps(record.bytes_by_medium, sort_keys=True)),
            record.studies_added,
            record.studies_deleted,
            record.instances_added,
            record.instances_deleted,
            record.dicomweb_requests,
            record.dicomweb_bytes_served,
            record.job_seconds,
            record.computed_at.astimezone(UTC).isoformat(),
        ]
        for record in records.iterator(chunk_size=2000)
    )
    return csv_lines(CSV_COLUMNS, rows)
