"""/health/live and /health/ready: any Host, no database for live, each failing part named."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client, override_settings
from django_tenants.utils import schema_context

from portal import health
from portal.embedded import embedded_redis
from studies.models import MediumStatus, StorageMedium
from tests.studies.conftest import storage  # noqa: F401  (the fixture: files cleaned up)


@pytest.fixture(autouse=True)
def _fresh_probes() -> Iterator[None]:
    health._probes.clear()
    yield
    health._probes.clear()


@pytest.fixture
def heartbeat() -> Iterator[None]:
    """The singleton's heartbeat, written by calling the task the way a worker would."""
    health.singleton_heartbeat()
    yield
    health.redis_client(settings.REDIS_URL).delete(health.HEARTBEAT_KEY)


def ready(host: str = "10.0.0.5:8000") -> tuple[int, dict[str, dict]]:
    response = Client(HTTP_HOST=host).get("/health/ready")
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
    status, checks = ready()
    assert checks["media"]["reason"] == "alpha / default: not writable (FileNotFoundError ENOENT)"
    with schema_context(alpha.schema_name):
        StorageMedium.objects.filter(name="default").update(status=MediumStatus.OFFLINE)
    health._probes.clear()
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
