"""Prometheus metrics: HTTP and ingest counters, plus fleet gauges read at scrape time.

Counters and histograms live in the process that counts them. With PROMETHEUS_MULTIPROC_DIR
set (before the processes start, one directory shared by the web workers and, on the same
host, the Celery workers) /metrics adds up every process's files; without it, it shows the
serving process only. The gauges (queue lengths, storage per tenant and medium, failed job
runs per tenant) are read from Redis and each tenant's schema on every scrape, so they are
right whichever process answers.
"""

import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Callable, Iterable
from functools import cache

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric

logger = logging.getLogger(__name__)

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
QUEUES = ("default", "periodic")
# kombu's Redis transport keeps priorities 3, 6 and 9 of a queue in keys of their own.
_PRIORITY_KEYS = ("", "\x06\x163", "\x06\x166", "\x06\x169")

HTTP_REQUESTS = Counter(
    "portal_http_requests",
    "HTTP requests answered, by method, status class and route name.",
    ["method", "status", "route"],
)
HTTP_LATENCY = Histogram(
    "portal_http_request_duration_seconds",
    "Time until the response (its first byte for streamed ones), by method and route name.",
    ["method", "route"],
)
INGEST_ITEMS = Counter(
    "portal_ingest_items",
    "Ingest items processed, by outcome (stored, replaced, duplicate, rejected, error).",
    ["outcome", "source"],
)
INGEST_LATENCY = Histogram(
    "portal_ingest_item_duration_seconds",
    "Time to process one ingest item, by source.",
    ["source"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)


def ingest_observe(*, source: str, outcome: str, seconds: float) -> None:
    INGEST_ITEMS.labels(outcome=outcome, source=source).inc()
    INGEST_LATENCY.labels(source=source).observe(seconds)


def route_name(request: HttpRequest) -> str:
    """The URL pattern's name (never the raw path: one series per route, not per URL)."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "unmatched"
    return match.view_name if match.url_name else "unnamed"


class FleetCollector:
    """Gauges read when scraped: Celery queue lengths, and per tenant its media's bytes and
    its failed job runs (one query per tenant, without switching the search path)."""

    def collect(self) -> Iterable[Metric]:
        errors = GaugeMetricFamily(
            "portal_scrape_error",
            "1 when a part of this scrape could not be read.",
            labels=["part"],
        )
        yield from self._queues(errors)
        yield from self._tenants(errors)
        yield errors

    def _queues(self, errors: GaugeMetricFamily) -> Iterable[Metric]:
        from portal.health import redis_client

        gauge = GaugeMetricFamily(
            "portal_celery_queue_length", "Messages waiting in a Celery queue.", labels=["queue"]
        )
        try:
            pipe = redis_client(settings.CELERY_BROKER_URL).pipeline(transaction=False)
            for queue in QUEUES:
                for suffix in _PRIORITY_KEYS:
                    pipe.llen(queue + suffix)
            lengths = pipe.execute()
        except Exception as error:
            logger.warning("metrics: queue lengths unreadable: %s", error)
            errors.add_metric(["queues"], 1)
            return
        errors.add_metric(["queues"], 0)
        step = len(_PRIORITY_KEYS)
        for index, queue in enumerate(QUEUES):
            gauge.add_metric([queue], sum(lengths[index * step : (index + 1) * step]))
        yield gauge

    def _tenants(self, errors: GaugeMetricFamily) -> Iterable[Metric]:
        """From the fleet figures (tenants/figures.py): one query, every tenant, any count."""
        from studies.models import MediumStatus
        from tenants.figures import MEASURED_STATUSES
        from tenants.models import FleetFigures
        from tenants.selectors import time_limited_reads

        used = GaugeMetricFamily(
            "portal_storage_used_bytes",
            "Bytes on a tenant's medium, as last measured.",
            labels=["tenant", "medium"],
        )
        capacity = GaugeMetricFamily(
            "portal_storage_capacity_bytes",
            "Capacity of a tenant's medium.",
            labels=["tenant", "medium"],
        )
        failed = GaugeMetricFamily(
            "portal_job_runs_failed",
            "Job runs of a tenant whose last attempt failed (not retried successfully).",
            labels=["tenant"],
        )
        age = GaugeMetricFamily(
            "portal_fleet_figures_age_seconds",
            "Age of the oldest tenant figures the fleet pass keeps (these gauges' freshness).",
        )
        try:
            with time_limited_reads(settings.PORTAL_HEALTH_TIMEOUT):
                rows = list(
                    FleetFigures.objects.filter(tenant__status__in=MEASURED_STATUSES)
                    .select_related("tenant")
                    .order_by("tenant__slug")
                )
        except DatabaseError as error:
            logger.warning("metrics: tenants unreadable: %s", error)
            errors.add_metric(["tenants"], 1)
            return
        broken = 0
        now = time.time()
        oldest = 0.0
        for row in rows:
            oldest = max(oldest, now - row.measured_at.timestamp())
            slug = row.tenant.slug
            if row.error:  # a broken schema, as the pass found it
                logger.info("metrics: figures of %s unreadable: %s", slug, row.error)
                broken += 1
                continue
            failed.add_metric([slug], row.failed_jobs)
            for medium in row.media_detail:
                if medium["status"] != MediumStatus.RETIRED:
                    used.add_metric([slug, medium["name"]], medium["used_bytes"])
                    capacity.add_metric([slug, medium["name"]], medium["capacity_bytes"])
        age.add_metric([], round(oldest, 1))
        errors.add_metric(["tenants"], broken)
        yield from (used, capacity, failed, age)


class _ThisProcess:
    """The default registry (this process's counters) as a collector of a scrape registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def exposition() -> bytes:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    registry.register(FleetCollector())
    return generate_latest(registry)


@cache
def _allowed_networks() -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(
        ipaddress.ip_network(net, strict=False) for net in settings.PORTAL_METRICS_ALLOWED_NETWORKS
    )


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # never raises, and keeps every str distinct


def scrape_allowed(request: HttpRequest) -> bool:
    """The bearer token when one is configured and sent; else the caller's network.

    A request relayed by a proxy that is not in PORTAL_TRUSTED_PROXIES has an unknown client,
    so only the token admits it: a local reverse proxy must not make the world "local".
    """
    from portal.routing import client_address, is_trusted_proxy

    token = settings.PORTAL_METRICS_TOKEN
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header:
        scheme, _, sent = header.partition(" ")
        # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError).
        return (
            bool(token)
            and scheme.lower() == "bearer"
            and hmac.compare_digest(_utf8(sent), _utf8(token))
        )
    remote = request.META.get("REMOTE_ADDR", "")
    if "HTTP_X_FORWARDED_FOR" in request.META and not is_trusted_proxy(remote):
        return False
    try:
        address = ipaddress.ip_address(client_address(request))
    except ValueError:
        return False
    return any(address in network for network in _allowed_networks())


class MetricsMiddleware:
    """Answers /metrics (before routing, any Host) and counts every other request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.rstrip("/") == "/metrics":
            return self.scrape(request)
        started = time.perf_counter()
        response = self.get_response(request)
        method = request.method if request.method in METHODS else "other"
        route = route_name(request)
        HTTP_REQUESTS.labels(method, f"{response.status_code // 100}xx", route).inc()
        HTTP_LATENCY.labels(method, route).observe(time.perf_counter() - started)
        return response

    def scrape(self, request: HttpRequest) -> HttpResponse:
        try:
            response = self._scrape(request)
        except Exception:
            # Answered here: Django's error page would need the sessions and the tenant that
            # the later middlewares set up.
            logger.exception("metrics: the scrape failed")
            response = HttpResponse(
                "Internal Server Error\n", status=500, content_type="text/plain"
            )
            response._has_been_logged = True  # type: ignore[attr-defined]
        response["Cache-Control"] = "no-store"
        return response

    def _scrape(self, request: HttpRequest) -> HttpResponse:
        if not scrape_allowed(request):
            logger.info("metrics refused to %s", request.META.get("REMOTE_ADDR"))
            return HttpResponse("Forbidden\n", status=403, content_type="text/plain")
        from portal.schemas import tenant_connection

        tenant_connection().set_schema_to_public()
        return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
