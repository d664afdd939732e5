"""The super-admin's platform page: readiness with reasons, queues, workers, heartbeat."""

import time

from django.conf import settings
from django.test import Client

from portal import health
from tests.conftest import logged_in


def test_the_platform_page_shows_each_check_and_the_queues(superadmin_client, settings):
    settings.PORTAL_HEARTBEAT_MAX_AGE = 300
    health.redis_client(settings.REDIS_URL).delete(health.HEARTBEAT_KEY)
    page = superadmin_client.get("/platform/").content.decode()
    for check in ("database", "broker", "media", "singleton"):
        assert f"<td>{check}</td>" in page, check
    assert "not ready" in page and "none recorded" in page  # no beat runs in the tests
    assert "Queue <code>default</code>" in page and "Queue <code>periodic</code>" in page
    health.singleton_heartbeat()
    page = superadmin_client.get("/platform/").content.decode()
    assert "s ago" in page
    assert 'href="/platform/"' in page  # reachable from the navigation


def test_only_the_super_admin_sees_it(make_user, alpha, alpha_admin_client):
    plain = make_user(None, username="plain-platform")
    assert (
        logged_in(Client(HTTP_HOST="localhost"), plain.username).get("/platform/").status_code
        == 403
    )
    assert alpha_admin_client.get("/platform/").status_code == 404  # not a tenant page


def test_the_gateway_processes_and_their_associations_per_tenant_are_shown(
    superadmin_client, alpha
):
    from dicomnet.presence import Presence

    presence = Presence(lambda: {"alpha": 2, "beta": 0}, label="page-test")
    presence.publish()
    try:
        page = superadmin_client.get("/platform/").content.decode()
        assert f"<code>{presence.name_in_redis}</code>" in page and "(2 open" in page
        assert '<a href="/tenants/alpha/">alpha</a> 2' in page
        assert ">beta</a>" not in page  # no open association: not listed
    finally:
        presence.stop()
    assert presence.name_in_redis not in superadmin_client.get("/platform/").content.decode()


def test_a_worker_is_seen_from_its_snapshot_without_a_ping(superadmin_client, monkeypatch):
    from types import SimpleNamespace

    from celery.signals import worker_shutdown

    from dicomnet.presence import worker_presence
    from portal.celery import _announce_worker, app

    def no_ping(*args: object, **kwargs: object) -> None:
        raise AssertionError("the page must not wait for workers to answer a ping")

    monkeypatch.setattr(app.control, "ping", no_ping)
    with monkeypatch.context() as nobody:  # killed workers of other tests linger up to 15 s
        nobody.setattr("portal.platform_status.worker_presence", list)
        assert "no worker seen" in superadmin_client.get("/platform/").content.decode()
    _announce_worker(sender=SimpleNamespace(hostname="celery@platform-test"))
    deadline = time.monotonic() + 5
    while "celery@platform-test" not in [p.name for p in worker_presence()]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert (
        "<code>celery@platform-test</code>" in superadmin_client.get("/platform/").content.decode()
    )
    worker_shutdown.send(sender=None)
    assert "celery@platform-test" not in [p.name for p in worker_presence()]


def test_a_snapshot_this_code_did_not_write_is_ignored(superadmin_client, alpha):
    import json

    from dicomnet.presence import KEY_PREFIX, gateway_presence
    from portal.health import redis_client

    client = redis_client(settings.REDIS_URL)
    client.set(KEY_PREFIX + "odd:1", json.dumps({"at": time.time(), "associations": {"../x": 3}}))
    client.set(KEY_PREFIX + "odd:2", "[" * 100_000)
    try:
        names = {p.name: p for p in gateway_presence()}
        assert names["odd:1"].associations == {}  # not a slug: not counted
        assert "odd:2" not in names
        assert superadmin_client.get("/platform/").status_code == 200
    finally:
        client.delete(KEY_PREFIX + "odd:1", KEY_PREFIX + "odd:2")
