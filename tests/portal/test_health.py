"""/health/live and /health/ready: any Host, no database for live, each failing part named
(to the callers admitted to /metrics), bounded in time outside the tests' transaction too."""

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.db import connection
from django.test import Client, override_settings
from django_tenants.utils import quote_schema_name, schema_context

from portal import health
from portal.embedded import embedded_redis
from studies.models import MediumStatus, StorageMedium
from tenants.figures import figures_refresh
from tests.conftest import test_database_url
from tests.studies.conftest import storage  # noqa: F401  (the fixture: files cleaned up)

OUTSIDE = "203.0.113.9"


@pytest.fixture(autouse=True)
def _fresh_probes() -> Iterator[None]:
    health._probes.clear()
    health.readiness_cache.clear()
    yield
    health._probes.clear()
    health.readiness_cache.clear()


@pytest.fixture
def heartbeat() -> Iterator[None]:
    """The singleton's heartbeat, written by calling the task the way a worker would."""
    health.singleton_heartbeat()
    yield
    health.redis_client(settings.REDIS_URL).delete(health.HEARTBEAT_KEY)


def measured(*tenants: Any) -> None:
    """What the fleet pass does every minute: the tenants' figures, probes included, anew."""
    health._probes.clear()
    figures_refresh(tenants=list(tenants))
    health._probes.clear()


def ready(host: str = "10.0.0.5:8000", **extra: str) -> tuple[int, dict[str, dict]]:
    """/health/ready checked afresh, asked from 127.0.0.1 (an allowed network: reasons shown)."""
    health.readiness_cache.clear()
    response = Client(HTTP_HOST=host, **extra).get("/health/ready")
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["status"] == ("ok" if response.status_code == 200 else "fail")
    return response.status_code, {check["name"]: check for check in body["checks"]}


@pytest.mark.parametrize("host", ["10.0.0.5:8000", "nonsense", "alpha.localhost", "localhost"])
def test_live_answers_any_host_without_the_database(db, host, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = Client(HTTP_HOST=host).get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert Client(HTTP_HOST=host).head("/health/live/").status_code == 200


def test_health_refuses_writes(db):
    response = Client(HTTP_HOST="nonsense").post("/health/live")
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"


def test_an_unknown_host_is_still_refused_elsewhere(db):
    """The health middleware answers its own paths only: host validation stays for the rest."""
    assert Client(HTTP_HOST="nonsense").get("/healthz").status_code == 400


@pytest.mark.usefixtures("storage")
def test_ready_when_everything_is_up(heartbeat):
    status, checks = ready()
    assert status == 200, checks
    assert list(checks) == ["database", "broker", "media", "singleton"]
    assert all(check["ok"] for check in checks.values())


@pytest.mark.usefixtures("storage")
def test_ready_names_the_broker_when_redis_goes_away(heartbeat, tmp_path):
    with embedded_redis(tmp_path / "redis") as url, override_settings(CELERY_BROKER_URL=url):
        status, checks = ready()
        assert status == 200, checks
    # The throwaway Redis is stopped now; the portal still points its broker at it.
    with override_settings(CELERY_BROKER_URL=url):
        status, checks = ready()
    assert status == 503
    assert checks["broker"]["ok"] is False
    assert checks["broker"]["reason"].startswith("unreachable (")
    assert "127.0.0.1" not in checks["broker"]["reason"]  # no hosts for anonymous callers
    assert checks["database"]["ok"] and checks["media"]["ok"] and checks["singleton"]["ok"]


@pytest.mark.usefixtures("storage")
def test_ready_names_the_tenant_and_medium_that_cannot_be_written(alpha, heartbeat, tmp_path):
    # A regular file where the directory should be: the probe fails even as root, where
    # permission bits would not stop the write.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with schema_context(alpha.schema_name):
        StorageMedium.objects.filter(name="default").update(root=str(blocker))
    measured(alpha)
    response = Client(HTTP_HOST="nonsense").get("/health/ready")
    assert response.status_code == 503
    checks = {check["name"]: check for check in response.json()["checks"]}
    assert checks["media"]["ok"] is False
    assert checks["media"]["reason"] == "alpha / default: not writable (NotADirectoryError ENOTDIR)"
    assert str(tmp_path).encode() not in response.content  # no paths for anonymous callers
    assert checks["database"]["ok"] and checks["broker"]["ok"]

    # A missing directory fails too; a medium taken offline is not expected to take writes.
    with schema_context(alpha.schema_name):
        StorageMedium.objects.filter(name="default").update(root=str(tmp_path / "gone"))
    measured(alpha)
    status, checks = ready()
    assert checks["media"]["reason"] == "alpha / default: not writable (FileNotFoundError ENOENT)"
    with schema_context(alpha.schema_name):
        StorageMedium.objects.filter(name="default").update(status=MediumStatus.OFFLINE)
    health._probes.clear()
    measured(alpha)
    status, checks = ready()
    assert status == 200, checks


@pytest.mark.usefixtures("storage")
def test_the_media_probe_leaves_nothing_behind_and_is_reused_for_a_while(alpha):
    with schema_context(alpha.schema_name):
        root = Path(StorageMedium.objects.get(name="default").root)
    before = set(root.iterdir())
    assert health.check_media().ok
    first = health._probes[str(root)]
    assert health.check_media().ok
    assert health._probes[str(root)] is first  # cached: a poll every second writes once
    assert set(root.iterdir()) == before


@pytest.mark.usefixtures("storage")
def test_ready_names_the_singleton_when_the_heartbeat_is_stale(heartbeat):
    client = health.redis_client(settings.REDIS_URL)
    client.set(health.HEARTBEAT_KEY, repr(time.time() - 301))
    status, checks = ready()
    assert status == 503
    assert checks["singleton"]["ok"] is False
    assert checks["singleton"]["reason"].startswith("last heartbeat 30")
    assert all(checks[name]["ok"] for name in ("database", "broker", "media"))

    client.delete(health.HEARTBEAT_KEY)
    status, checks = ready()
    assert (status, checks["singleton"]["reason"]) == (503, "no heartbeat recorded")

    with override_settings(PORTAL_HEARTBEAT_MAX_AGE=0):  # a web-only deployment
        status, checks = ready()
    assert status == 200, checks
    assert checks["singleton"] == {
        "name": "singleton",
        "ok": True,
        "reason": "not checked (PORTAL_HEARTBEAT_MAX_AGE=0)",
    }


def test_the_heartbeat_is_scheduled_every_minute_and_written_under_a_fixed_key(db):
    from portal.celery import app

    entry = app.conf.beat_schedule["singleton-heartbeat"]
    assert entry["task"] == "portal.singleton_heartbeat" == health.singleton_heartbeat.name
    assert entry["schedule"] == 60.0
    written = health.singleton_heartbeat()
    stored = health.redis_client(settings.REDIS_URL).get("portal:singleton-heartbeat")
    assert float(stored) == written
    health.redis_client(settings.REDIS_URL).delete(health.HEARTBEAT_KEY)


@pytest.mark.usefixtures("storage")
def test_anyone_else_sees_which_check_fails_but_not_why(alpha, heartbeat, tmp_path):
    with schema_context(alpha.schema_name):
        StorageMedium.objects.filter(name="default").update(root=str(tmp_path / "gone"))
    measured(alpha)
    names = ["database", "broker", "media", "singleton"]
    for extra in (
        {"REMOTE_ADDR": OUTSIDE},
        # relayed by a proxy that is not trusted: the client is unknown
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": OUTSIDE},
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_AUTHORIZATION": "Bearer wrong"},
    ):
        status, checks = ready(**extra)
        assert status == 503, extra
        assert list(checks) == names
        assert [(c["name"], c["ok"]) for c in checks.values()] == list(
            zip(names, [True, True, False, True], strict=True)
        )
        assert all(set(check) == {"name", "ok"} for check in checks.values()), checks
    # The callers admitted to /metrics see the reasons: its networks (above), or its token.
    with override_settings(PORTAL_METRICS_TOKEN="scrape-token-0123456789"):
        status, checks = ready(
            REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION="Bearer scrape-token-0123456789"
        )
    assert checks["media"]["reason"] == "alpha / default: not writable (FileNotFoundError ENOENT)"


@pytest.mark.usefixtures("storage")
def test_the_result_is_reused_for_a_few_seconds(heartbeat, tmp_path, django_assert_num_queries):
    assert health.READINESS_CACHE_SECONDS == 5.0
    status, checks = ready()
    assert status == 200, checks
    # Within the few seconds: no query, no broker, no probe; the same answer.
    with (
        django_assert_num_queries(0),
        override_settings(CELERY_BROKER_URL="redis://127.0.0.1:9/0"),
    ):
        for _ in range(3):
            response = Client(REMOTE_ADDR=OUTSIDE).get("/health/ready")
            assert response.status_code == 200
    # Once they are over, checked again.
    health.readiness_cache.at -= health.READINESS_CACHE_SECONDS
    with override_settings(CELERY_BROKER_URL="redis://127.0.0.1:9/0"):
        response = Client().get("/health/ready")
    assert response.status_code == 503
    assert {c["name"]: c["ok"] for c in response.json()["checks"]}["broker"] is False


def test_a_check_that_crashes_gets_a_plain_503_and_a_log_line(db, monkeypatch, caplog):
    def broken() -> list[health.Check]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(health, "readiness", broken)
    with caplog.at_level("ERROR", logger="portal.health"):
        response = Client(HTTP_HOST="nonsense").get("/health/ready")
    assert response.status_code == 503
    assert response["Content-Type"] == "text/plain"
    assert response.content == b"Service Unavailable\n"
    assert [r.getMessage() for r in caplog.records] == ["readiness: the checks failed"]
    assert caplog.records[0].exc_info[0] is RuntimeError
    assert Client(HTTP_HOST="nonsense").get("/health/live").status_code == 200


def test_the_time_limits_do_not_outlast_the_checks(alpha):
    """SET LOCAL ends with the checks' own transaction; nested in the tests' transaction, the
    limits that were there before come back."""

    def limits() -> tuple[str, str]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')"
            )
            return cursor.fetchone()

    before = limits()
    assert health.check_database().ok
    health.check_media()
    assert limits() == before


# -- Outside the tests' transaction, as in production ---------------------------------------


def in_own_connection(function: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Runs `function` in a thread: Django gives it a connection of its own, in autocommit
    and outside the tests' transaction (whose SET LOCAL would otherwise still be in force)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            outcome["value"] = function()
        except BaseException as error:
            outcome["error"] = error
        finally:
            outcome["seconds"] = time.monotonic() - started
            connection.close()

    thread = threading.Thread(target=run, name="outside-the-test-transaction", daemon=True)
    thread.start()
    return thread, outcome


def locked_medium_table(tenant: Any) -> psycopg.Connection:
    """A second session holding ACCESS EXCLUSIVE on the tenant's studies_storagemedium (in
    an open transaction) until it is closed: every read of that table waits."""
    locker = psycopg.connect(test_database_url())
    locker.execute("SET lock_timeout = '5s'")
    table = f"{quote_schema_name(tenant.schema_name)}.studies_storagemedium"
    locker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    return locker


def run_while_locked(tenant: Any, function: Callable[[], Any], limit: float) -> dict[str, Any]:
    """`function` in its own connection while the tenant's medium table is locked; fails if it
    is not back within `limit` seconds (the lock is released then, so it ends anyway)."""
    locker = locked_medium_table(tenant)
    try:
        thread, outcome = in_own_connection(function)
        thread.join(limit)
        hung = thread.is_alive()
    finally:
        locker.close()  # rolls back: the lock goes
    thread.join(10)
    assert not hung, f"still waiting after {limit} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome


@override_settings(PORTAL_HEALTH_TIMEOUT=1.0)
def test_a_locked_media_table_does_not_delay_readiness(alpha):
    """Readiness reads the fleet figures, not the tenants' tables: a tenant whose table is
    locked (a long migration, a stuck transaction) holds up nothing."""
    outcome = run_while_locked(
        alpha, lambda: Client(HTTP_HOST="nonsense").get("/health/ready"), limit=3.0
    )
    assert outcome["seconds"] < 1.0, outcome["seconds"]
    checks = {check["name"]: check for check in outcome["value"].json()["checks"]}
    assert checks["database"]["ok"] is True
    assert "media unreadable" not in checks["media"].get("reason", "")
