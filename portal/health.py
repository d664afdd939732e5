"""Health endpoints, answered before tenant routing and host validation, and the heartbeat.

`/health/live` says the process serves requests and checks nothing else. `/health/ready` checks
the database, the broker, that every online filesystem medium of every active tenant takes a
write, and that the singleton's heartbeat is recent. Its result is reused for
READINESS_CACHE_SECONDS per process. Anyone may ask, so only callers admitted to /metrics
(PORTAL_METRICS_ALLOWED_NETWORKS or the metrics token) see why a check fails: a reason names
the part (`alpha / default: not writable (EACCES)`), never a path, host or message; the log line
of the failure has the details for the operator. Everyone else sees check names and ok only.
"""

import errno
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import redis
from celery import shared_task
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from jobs.tasks import PlatformTask

if TYPE_CHECKING:
    from tenants.selectors import QueryBudget

logger = logging.getLogger(__name__)

HEARTBEAT_KEY = "portal:singleton-heartbeat"
HEARTBEAT_TTL_SECONDS = 24 * 3600
# A probe result is reused this long, so load balancers polling every few seconds do not
# write to every disk of every tenant on each poll.
PROBE_CACHE_SECONDS = 10.0
# The whole /health/ready result is reused this long per process: a poll costs no query.
READINESS_CACHE_SECONDS = 5.0
MAX_LISTED_FAILURES = 20


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    reason: str = ""


@lru_cache(maxsize=8)
def redis_client(url: str) -> redis.Redis:
    """A client with short timeouts (cached per URL: its pool keeps the connection)."""
    timeout = settings.PORTAL_HEALTH_TIMEOUT
    return redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)


def _failure(error: BaseException) -> str:
    code = getattr(error, "errno", None)
    name = errno.errorcode.get(code, "") if isinstance(code, int) else ""
    return f"{type(error).__name__}{f' {name}' if name else ''}"


def check_database() -> Check:
    from tenants.selectors import time_limited_reads

    try:
        with time_limited_reads(settings.PORTAL_HEALTH_TIMEOUT), connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as error:
        logger.warning("readiness: database check failed: %s", error)
        return Check("database", False, f"unavailable ({_failure(error)})")
    return Check("database", True)


def check_broker() -> Check:
    url = settings.CELERY_BROKER_URL
    try:
        if urlsplit(url).scheme in {"redis", "rediss", "unix"}:
            redis_client(url).ping()
        else:
            from kombu import Connection

            with Connection(url, connect_timeout=settings.PORTAL_HEALTH_TIMEOUT) as broker:
                broker.ensure_connection(max_retries=1)
    except Exception as error:
        logger.warning("readiness: broker check failed: %s", error)
        return Check("broker", False, f"unreachable ({_failure(error)})")
    return Check("broker", True)


def check_singleton() -> Check:
    """The heartbeat the singleton's beat schedules every minute, written by a worker."""
    max_age = settings.PORTAL_HEARTBEAT_MAX_AGE
    if max_age <= 0:
        return Check("singleton", True, "not checked (PORTAL_HEARTBEAT_MAX_AGE=0)")
    try:
        raw = redis_client(settings.REDIS_URL).get(HEARTBEAT_KEY)
    except redis.RedisError as error:
        logger.warning("readiness: heartbeat unreadable: %s", error)
        return Check("singleton", False, f"heartbeat unreadable ({_failure(error)})")
    if raw is None:
        return Check("singleton", False, "no heartbeat recorded")
    try:
        age = time.time() - float(raw)
    except (TypeError, ValueError):
        return Check("singleton", False, "heartbeat unreadable")
    if age > max_age:
        return Check("singleton", False, f"last heartbeat {int(age)} s ago (limit {max_age} s)")
    return Check("singleton", True)


@dataclass(frozen=True)
class MediumRoot:
    tenant: str
    medium: str
    root: str

    @property
    def label(self) -> str:
        return f"{self.tenant} / {self.medium}"


@dataclass(frozen=True)
class MediumProbe:
    medium: MediumRoot
    problem: str | None  # what the fleet pass's write probe found (None: writable)
    measured: bool = True  # False: the tenant has no figures yet, so it is probed now


def online_filesystem_media(budget: "QueryBudget") -> tuple[list[MediumProbe], list[str], float]:
    """Every active tenant's online filesystem media as the fleet pass last found them (one
    query, tenants/figures.py), tenants not measured yet read from their schema; why the
    media of others could not be read (`alpha: ...`); and the age of the oldest figures."""
    from studies.models import MediumKind, MediumStatus
    from tenants.models import FleetFigures, Tenant, TenantStatus
    from tenants.selectors import fleet_media

    rows = FleetFigures.objects.filter(tenant__status=TenantStatus.ACTIVE).select_related("tenant")
    media: list[MediumProbe] = []
    unreadable: list[str] = []
    oldest = 0.0
    now = time.time()
    for row in rows.order_by("tenant__slug"):
        oldest = max(oldest, now - row.measured_at.timestamp())
        if row.error:
            unreadable.append(f"{row.tenant.slug}: media unreadable ({row.error})")
            continue
        media += [
            MediumProbe(MediumRoot(row.tenant.slug, m["name"], m["root"]), m.get("probe"))
            for m in row.media_detail
            if m["status"] == MediumStatus.ONLINE and m["kind"] == MediumKind.FILESYSTEM
        ]
    unmeasured = (
        Tenant.objects.filter(status=TenantStatus.ACTIVE, fleet_figures__isnull=True)
        .exclude(schema_name="public")
        .order_by("slug")
        .values_list("slug", "schema_name")
    )
    for read in fleet_media(unmeasured, budget):
        if read.error:
            logger.warning(
                "readiness: media of %s unreadable: %s", read.slug, read.detail or read.error
            )
            unreadable.append(f"{read.slug}: media unreadable ({read.error})")
            continue
        media += [
            MediumProbe(MediumRoot(read.slug, medium.name, medium.root), None, measured=False)
            for medium in read.media
            if medium.status == MediumStatus.ONLINE and medium.kind == MediumKind.FILESYSTEM
        ]
    return media, unreadable, oldest


def mount_points() -> list[str]:
    """The mount points of this process's view, longest first (read from /proc, no I/O on
    the mounts themselves: a hung one cannot hang this)."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return ["/"]
    points = {line.split()[1].replace("\\040", " ") for line in lines if len(line.split()) > 1}
    return sorted(points | {"/"}, key=len, reverse=True)


def mount_of(root: str, points: list[str]) -> str:
    for point in points:
        if root == point or root.startswith(point.rstrip("/") + "/"):
            return point
    return "/"


def write_probe(root: str) -> str | None:
    """Create, fsync and delete a small file in `root`; None when that worked, else why not."""
    path = Path(root) / f".portal-health-{uuid.uuid4().hex}"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"portal health probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)
    except OSError as error:
        return _failure(error)
    return None


class _Probe:
    """One write probe of one root, run in a daemon thread: a hung disk cannot hang the
    request, and a probe still hanging is not started again."""

    def __init__(self, root: str):
        self.root = root
        self.done = threading.Event()
        self.reason: str | None = None
        self.finished_at = 0.0
        threading.Thread(target=self._run, name="health-probe", daemon=True).start()

    def _run(self) -> None:
        try:
            self.reason = write_probe(self.root)
        finally:
            self.finished_at = time.monotonic()
            self.done.set()

    def fresh(self, now: float) -> bool:
        return not self.done.is_set() or now - self.finished_at < PROBE_CACHE_SECONDS


_probes: dict[str, _Probe] = {}
_probes_lock = threading.Lock()


def probe_roots(roots: list[str], timeout: float) -> dict[str, str | None]:
    """Why each root is not writable (None: it is), from probes at most a few seconds old."""
    now = time.monotonic()
    with _probes_lock:
        for stale in set(_probes) - set(roots):
            if _probes[stale].done.is_set():
                del _probes[stale]
        for root in roots:
            probe = _probes.get(root)
            if probe is None or not probe.fresh(now):
                _probes[root] = _Probe(root)
        probes = {root: _probes[root] for root in roots}
    deadline = now + timeout
    results: dict[str, str | None] = {}
    for root, probe in probes.items():
        finished = probe.done.wait(max(0.0, deadline - time.monotonic()))
        results[root] = probe.reason if finished else "timed out"
    return results


def check_media() -> Check:
    """Every active tenant's online filesystem media, from the fleet pass's last write probe
    of each (tenants/figures.py), and a write probe now of one medium per filesystem they
    are on: complete at any tenant count, at the cost of a few probes. Reading the list
    takes at most PORTAL_HEALTH_TIMEOUT, waiting for the probes at most as long again."""
    from tenants.selectors import time_limited_reads

    try:
        with time_limited_reads(settings.PORTAL_HEALTH_TIMEOUT) as budget:
            media, failures, oldest = online_filesystem_media(budget)
    except DatabaseError as error:
        logger.warning("readiness: media list unreadable: %s", error)
        return Check("media", False, f"not checked: tenants unreadable ({_failure(error)})")
    points = mount_points()
    first_on: dict[str, MediumProbe] = {}
    for probe in media:
        first_on.setdefault(mount_of(probe.medium.root, points), probe)
    now_roots = {p.medium.root for p in first_on.values()}
    now_roots |= {p.medium.root for p in media if not p.measured}
    results = probe_roots(sorted(now_roots), settings.PORTAL_HEALTH_TIMEOUT)
    failing = set()
    for probe in media:
        root = probe.medium.root
        reason = results.get(root, probe.problem)
        if reason is not None and probe.medium.label not in failing:
            failing.add(probe.medium.label)
            logger.warning(
                "readiness: %s (%s) not writable: %s",
                probe.medium.label,
                probe.medium.root,
                reason,
            )
            failures.append(f"{probe.medium.label}: not writable ({reason})")
    if not failures:
        return Check(
            "media",
            True,
            f"{len(media)} online filesystem media writable "
            f"({len(first_on)} filesystem{'s' if len(first_on) != 1 else ''} probed now, "
            f"each medium at most {int(oldest)} s ago)",
        )
    shown = failures[:MAX_LISTED_FAILURES]
    if len(failures) > len(shown):
        shown.append(f"and {len(failures) - len(shown)} more")
    return Check("media", False, "; ".join(shown))


def readiness() -> list[Check]:
    from portal.schemas import tenant_connection

    tenant_connection().set_schema_to_public()
    database = check_database()
    media = check_media() if database.ok else Check("media", False, "not checked: no database")
    return [database, check_broker(), media, check_singleton()]


class _ReadinessCache:
    """The last readiness result of this process, reused for READINESS_CACHE_SECONDS; a
    request arriving while it is being computed waits for that result instead of starting
    the checks once more."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.checks: list[Check] | None = None
        self.at = 0.0

    def get(self) -> list[Check]:
        with self.lock:
            if self.checks is None or time.monotonic() - self.at >= READINESS_CACHE_SECONDS:
                self.checks = readiness()
                self.at = time.monotonic()
            return self.checks

    def clear(self) -> None:
        with self.lock:
            self.checks = None


readiness_cache = _ReadinessCache()


def ready_response(request: HttpRequest) -> HttpResponse:
    from portal.metrics import scrape_allowed

    checks = readiness_cache.get()
    ok = all(check.ok for check in checks)
    if scrape_allowed(request):
        shown = [asdict(check) for check in checks]
    else:  # anyone: which part fails, not which tenant or medium
        shown = [{"name": check.name, "ok": check.ok} for check in checks]
    return HttpResponse(
        json.dumps({"status": "ok" if ok else "fail", "checks": shown}),
        content_type="application/json",
        status=200 if ok else 503,
    )


class HealthMiddleware:
    """Answers /health/live and /health/ready for any Host header, before anything else."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info.rstrip("/")
        if path not in {"/health/live", "/health/ready"}:
            return self.get_response(request)
        if request.method not in {"GET", "HEAD"}:
            response: HttpResponse = JsonResponse({"status": "method not allowed"}, status=405)
            response["Allow"] = "GET, HEAD"
        elif path == "/health/live":
            response = JsonResponse({"status": "ok"})
        else:
            try:
                response = ready_response(request)
            except Exception:
                # Answered here: Django's error page would need the sessions and the tenant
                # that the later middlewares set up.
                logger.exception("readiness: the checks failed")
                response = HttpResponse(
                    "Service Unavailable\n", status=503, content_type="text/plain"
                )
            # Failures are logged above with their details; not once more per poll by Django.
            response._has_been_logged = True  # type: ignore[attr-defined]
        response["Cache-Control"] = "no-store"
        return response


@shared_task(base=PlatformTask, name="portal.singleton_heartbeat")
def singleton_heartbeat() -> float:
    """Scheduled by the singleton every minute: proves beat and a worker are alive."""
    now = time.time()
    redis_client(settings.REDIS_URL).set(HEARTBEAT_KEY, repr(now), ex=HEARTBEAT_TTL_SECONDS)
    return now
