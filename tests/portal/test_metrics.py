"""/metrics: who may scrape it, and what it counts (requests, ingest, queues, storage, jobs)."""

import pytest
import redis
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django_tenants.utils import schema_context
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from jobs.models import JobRun, JobStatus
from portal import metrics
from portal.embedded import embedded_redis
from studies.models import MediumStatus, StorageMedium
from tenants.figures import FIGURES_TENANT_SECONDS, figures_refresh
from tenants.models import FleetFigures
from tenants.selectors import TenantFigures, tenant_figures
from tests.conftest import owner_role, tenant_client
from tests.portal.test_health import in_own_connection, run_while_locked
from tests.studies.conftest import storage  # noqa: F401  (the fixture: files cleaned up)
from tests.studies.ingest.test_ingest import bundled, ingest

OUTSIDE = "203.0.113.9"


def scrape(**extra: str) -> dict[tuple[str, frozenset], float]:
    return samples_of(Client(HTTP_HOST="10.0.0.5:8000", **extra).get("/metrics"))


def samples_of(response) -> dict[tuple[str, frozenset], float]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_metrics_are_refused_outside_the_allowed_networks(db):
    assert Client(REMOTE_ADDR=OUTSIDE).get("/metrics").status_code == 403
    assert Client(REMOTE_ADDR="10.0.0.8", HTTP_HOST="nonsense").get("/metrics").status_code == 403


def test_a_local_reverse_proxy_does_not_make_everyone_local(db):
    # nginx on the same host relays the world from 127.0.0.1: the relayed client is unknown.
    relayed = Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=OUTSIDE)
    assert relayed.get("/metrics").status_code == 403
    # A trusted proxy (tests/settings.py) is believed about its client.
    trusted = Client(REMOTE_ADDR="10.9.8.7", HTTP_X_FORWARDED_FOR="127.0.0.1")
    assert trusted.get("/metrics").status_code == 200
    relayed_outsider = Client(REMOTE_ADDR="10.9.8.7", HTTP_X_FORWARDED_FOR=OUTSIDE)
    assert relayed_outsider.get("/metrics").status_code == 403


@override_settings(PORTAL_METRICS_TOKEN="scrape-token-0123456789")
def test_the_bearer_token_admits_from_anywhere_and_a_wrong_one_nowhere(db):
    good = "Bearer scrape-token-0123456789"
    assert Client(REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION=good).get("/metrics").status_code == 200
    for wrong in ("Bearer scrape-token-012345678", "Basic c2NyYXBl", "Bearer"):
        client = Client(REMOTE_ADDR="127.0.0.1", HTTP_AUTHORIZATION=wrong)
        assert client.get("/metrics").status_code == 403, wrong
    assert Client(REMOTE_ADDR=OUTSIDE).get("/metrics").status_code == 403


def test_without_a_configured_token_no_token_admits(db):
    client = Client(REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION="Bearer ")
    assert client.get("/metrics").status_code == 403


@pytest.mark.parametrize("token", ["", "scrape-token-0123456789", "scrape-tökén-0123456789"])
def test_a_token_that_is_not_ascii_is_refused_not_a_crash(db, token):
    with override_settings(PORTAL_METRICS_TOKEN=token):
        for sent in ("tökén", "scrape-tökén-0123456789x", "\udcff", "\ud800"):
            client = Client(REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION=f"Bearer {sent}")
            assert client.get("/metrics").status_code == 403, sent
        if token and not token.isascii():  # a configured one that is not ASCII still works
            client = Client(REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION=f"Bearer {token}")
            assert client.get("/metrics").status_code == 200


def test_a_scrape_that_crashes_gets_a_plain_500_and_a_log_line(db, monkeypatch, caplog):
    def broken() -> bytes:
        raise RuntimeError("a bug")

    monkeypatch.setattr(metrics, "exposition", broken)
    with caplog.at_level("ERROR", logger="portal.metrics"):
        response = Client(HTTP_HOST="nonsense").get("/metrics")
    assert response.status_code == 500
    assert response["Content-Type"] == "text/plain"
    assert response.content == b"Internal Server Error\n"
    assert [r.getMessage() for r in caplog.records] == ["metrics: the scrape failed"]


def test_requests_are_counted_by_route_name_never_by_path(alpha):
    before = scrape()
    client = tenant_client(alpha)
    assert client.get("/account/login/").status_code == 200
    assert client.get("/no-such-page-at-all/").status_code == 404
    after = scrape()

    login = {"method": "GET", "status": "2xx", "route": "login"}
    assert (
        value(after, "portal_http_requests_total", **login)
        == (value(before, "portal_http_requests_total", **login) or 0) + 1
    )
    unmatched = {"method": "GET", "status": "4xx", "route": "unmatched"}
    assert (value(after, "portal_http_requests_total", **unmatched) or 0) >= 1
    assert value(after, "portal_http_request_duration_seconds_count", method="GET", route="login")
    routes = {dict(labels).get("route") for name, labels in after if name.startswith("portal_http")}
    assert not any(route and "/" in route for route in routes)  # no raw paths as labels


@pytest.mark.usefixtures("storage")
def test_storage_and_failed_jobs_per_tenant_come_from_the_fleet_figures(alpha, beta):
    with schema_context(alpha.schema_name):
        StorageMedium.objects.filter(name="default").update(used_bytes=123_456)
        JobRun.objects.create(job="retention", period="2026-01-01T00:00", status=JobStatus.FAILED)
    with schema_context(beta.schema_name):
        StorageMedium.objects.filter(name="default").update(used_bytes=789)
        capacity = StorageMedium.objects.get(name="default").capacity_bytes
    figures_refresh(tenants=[alpha, beta])  # what the fleet pass does every minute
    with CaptureQueriesContext(connection) as queries:
        samples = scrape()
    assert not any("studies_storagemedium" in q["sql"] for q in queries)  # no tenant table read
    assert value(samples, "portal_fleet_figures_age_seconds") is not None
    assert value(samples, "portal_storage_used_bytes", tenant="alpha", medium="default") == 123456
    assert value(samples, "portal_storage_used_bytes", tenant="beta", medium="default") == 789
    assert value(samples, "portal_storage_capacity_bytes", tenant="beta", medium="default") == (
        capacity
    )
    assert value(samples, "portal_job_runs_failed", tenant="alpha") == 1
    assert value(samples, "portal_job_runs_failed", tenant="beta") == 0
    assert value(samples, "portal_scrape_error", part="tenants") == 0


def test_queue_lengths_come_from_the_broker(db, tmp_path):
    with embedded_redis(tmp_path / "redis") as url, override_settings(CELERY_BROKER_URL=url):
        broker = redis.Redis.from_url(url)
        broker.rpush("default", "a", "b", "c")
        broker.rpush("default\x06\x163", "urgent")  # kombu's key for priority 3
        broker.rpush("periodic", "p")
        samples = scrape()
        assert value(samples, "portal_celery_queue_length", queue="default") == 4
        assert value(samples, "portal_celery_queue_length", queue="periodic") == 1
        assert value(samples, "portal_scrape_error", part="queues") == 0
    # The broker is gone: the scrape still answers, and says which part it could not read.
    with override_settings(CELERY_BROKER_URL=url):
        samples = scrape()
    assert value(samples, "portal_celery_queue_length", queue="default") is None
    assert value(samples, "portal_scrape_error", part="queues") == 1


@pytest.mark.usefixtures("storage")
def test_ingest_items_are_counted_by_outcome_and_source(alpha):
    def count(outcome: str) -> float:
        labels = {"outcome": outcome, "source": "upload"}
        return REGISTRY.get_sample_value("portal_ingest_items_total", labels) or 0

    def observed() -> float:
        labels = {"source": "upload"}
        return REGISTRY.get_sample_value("portal_ingest_item_duration_seconds_count", labels) or 0

    stored, rejected, duplicates = count("stored"), count("rejected"), count("duplicate")
    timings = observed()
    with schema_context(alpha.schema_name):
        ingest([("ct.dcm", bundled("CT_small.dcm").read_bytes()), ("junk.dcm", b"not dicom")])
        ingest([("again.dcm", bundled("CT_small.dcm").read_bytes())])
    assert count("stored") == stored + 1
    assert count("rejected") == rejected + 1
    assert count("duplicate") == duplicates + 1
    assert observed() == timings + 3
    assert value(scrape(), "portal_ingest_items_total", outcome="stored", source="upload") == (
        stored + 1
    )


@override_settings(PORTAL_HEALTH_TIMEOUT=1.0)
def test_a_locked_media_table_neither_delays_the_scrape_nor_the_fleet_pass(alpha, beta):
    """Outside the tests' transaction: the scrape reads no tenant table, and the pass gives
    a tenant it cannot read in time its error and goes on with the others."""
    outcome = run_while_locked(
        alpha, lambda: Client(HTTP_HOST="nonsense").get("/metrics"), limit=3.0
    )
    assert outcome["seconds"] < 1.0, outcome["seconds"]
    samples = samples_of(outcome["value"])
    assert value(samples, "portal_celery_queue_length", queue="default") is not None

    def measure_both() -> list[str]:
        figures_refresh(tenants=[alpha, beta], time_budget=None)
        return [FleetFigures.objects.get(tenant=t).error for t in (alpha, beta)]

    outcome = run_while_locked(alpha, measure_both, limit=FIGURES_TENANT_SECONDS + 3.0)
    alpha_error, beta_error = outcome["value"]
    assert alpha_error in {"LockNotAvailable", "QueryCanceled"} and beta_error == ""
    samples = scrape()
    assert value(samples, "portal_storage_used_bytes", tenant="alpha", medium="default") is None
    assert (value(samples, "portal_scrape_error", part="tenants") or 0) >= 1
    # Unlocked, the next pass reads it again (committed, as the errors above were).
    thread, _ = in_own_connection(lambda: figures_refresh(tenants=[alpha], time_budget=None))
    thread.join(10)
    assert FleetFigures.objects.get(tenant=alpha).error == ""
    assert value(scrape(), "portal_job_runs_failed", tenant="alpha") is not None


@pytest.mark.usefixtures("storage")
def test_the_fleet_page_figures_and_the_gauges_read_the_same_rows(alpha):
    with schema_context(alpha.schema_name):
        StorageMedium.objects.filter(name="default").update(used_bytes=3_900_000_000)
        default = StorageMedium.objects.get(name="default")
        StorageMedium.objects.create(
            name="old",
            root=default.root,
            capacity_bytes=10**9,
            used_bytes=500,
            status=MediumStatus.RETIRED,
        )
        JobRun.objects.create(job="retention", period="2026-01-01T00:00", status=JobStatus.FAILED)
        JobRun.objects.create(job="retention", period="2026-01-02T00:00", status=JobStatus.FAILED)
    figures = tenant_figures(alpha)
    figures_refresh(tenants=[alpha])
    kept = FleetFigures.objects.get(tenant=alpha)
    assert (kept.media, kept.used_bytes, kept.capacity_bytes) == (
        figures.media,
        figures.used_bytes,
        figures.capacity_bytes,
    )
    assert (kept.media_above_watermark, kept.failed_jobs, kept.users) == (
        figures.media_above_watermark,
        figures.failed_jobs,
        figures.users,
    )
    assert figures.media == 1  # the retired one is not counted...
    assert figures.used_bytes == 3_900_000_000 + 500  # ...but its bytes still are
    assert figures.capacity_bytes == default.capacity_bytes
    assert figures.media_above_watermark == 1  # 3.9 GB of 4 GiB is above 90 %
    assert figures.failed_jobs == 2
    assert figures.users is not None and figures.audit_events is not None
    samples = scrape()
    assert value(samples, "portal_storage_used_bytes", tenant="alpha", medium="default") == (
        3_900_000_000
    )
    assert value(samples, "portal_storage_used_bytes", tenant="alpha", medium="old") is None
    assert value(samples, "portal_job_runs_failed", tenant="alpha") == 2


def test_figures_of_a_broken_schema_are_unknown(new_tenant):
    from django.db import connection

    tenant = new_tenant("broken-figures").tenant
    with owner_role(), connection.cursor() as cursor:
        cursor.execute("DROP TABLE t_broken_figures.jobs_jobrun CASCADE")
    assert tenant_figures(tenant) == TenantFigures()
    figures_refresh(tenants=[tenant])
    assert FleetFigures.objects.get(tenant=tenant).error == "UndefinedTable"
    assert value(scrape(), "portal_scrape_error", part="tenants") == 1
