"""Tasks on a real Celery worker over Redis: tenant stamps, refusal in public, one run per period.

The worker runs in a thread of this process with its own database connection, so it sees
only committed rows: the session's tenants, and what the tasks themselves commit.
"""

import uuid
from collections.abc import Iterator

import pytest
from celery.contrib.testing.worker import start_worker
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django_tenants.utils import schema_context

from jobs.models import JobRun, JobStatus
from jobs.runs import job_run
from jobs.tasks import TenantRequired, dispatch_tenant_job
from portal.celery import app
from studies.tasks import measure_storage_usage
from tenants.models import Tenant

pytestmark = pytest.mark.worker


@pytest.fixture(scope="module")
def worker(django_db_setup, django_db_blocker) -> Iterator[None]:  # type: ignore[no-untyped-def]
    with (
        django_db_blocker.unblock(),
        start_worker(
            app,
            pool="solo",
            concurrency=1,
            perform_ping_check=False,
            shutdown_timeout=30,
            queues=["default", "periodic"],
        ),
    ):
        yield


@pytest.fixture
def committed_runs(django_db_blocker) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A unique period for this test; the job runs the worker committed are removed after.

    The removal uses a connection of its own: the test's connection is inside the test's
    transaction, which rolls back, and a delete made there would roll back with it.
    """
    period = f"test-{uuid.uuid4().hex[:10]}"
    yield period
    _wait_until_idle()  # a late duplicate would otherwise commit a run after the clean-up
    with django_db_blocker.unblock():
        side = connections.create_connection(DEFAULT_DB_ALIAS)
        try:
            with side.cursor() as cursor:
                cursor.execute(
                    "SELECT table_schema FROM information_schema.tables"
                    " WHERE table_name = 'jobs_jobrun'"
                )
                for (schema,) in cursor.fetchall():
                    cursor.execute(
                        f'DELETE FROM "{schema}".jobs_jobrun WHERE period = %s', [period]
                    )
        finally:
            side.close()


@pytest.mark.django_db
def test_task_sent_from_a_tenant_runs_in_that_tenant(worker, alpha, beta, committed_runs):
    with schema_context(alpha.schema_name):
        result = measure_storage_usage.delay(period=committed_runs)
    counts = result.get(timeout=30)
    assert counts["media"] == 1
    with schema_context(alpha.schema_name):
        run = JobRun.objects.get(job="storage-usage", period=committed_runs)
    assert run.status == JobStatus.SUCCEEDED and run.counts == counts
    with schema_context(beta.schema_name):
        assert not JobRun.objects.filter(period=committed_runs).exists()
    assert not JobRun.objects.filter(period=committed_runs).exists()  # nor in public


@pytest.mark.django_db
def test_tenant_task_without_a_tenant_refuses_to_run(worker, committed_runs):
    assert connection.schema_name == "public"
    result = measure_storage_usage.delay(period=committed_runs)
    with pytest.raises(TenantRequired, match="must be sent from a tenant"):
        result.get(timeout=30)
    assert not JobRun.objects.filter(period=committed_runs).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("job", ["storage-usage", "verification"])
def test_a_second_dispatch_of_the_same_period_runs_nothing_twice(
    worker, alpha, beta, committed_runs, monkeypatch, job
):
    """Two beats firing the same schedule: each tenant still gets one run for the period."""
    monkeypatch.setattr("jobs.tasks.period_key", lambda *a, **k: committed_runs)
    first = dispatch_tenant_job.delay(job=job, every_seconds=900, spread_seconds=0)
    second = dispatch_tenant_job.delay(job=job, every_seconds=900, spread_seconds=0)
    assert first.get(timeout=30) >= 2 and second.get(timeout=30) == first.get()
    _wait_for_runs([alpha, beta], committed_runs)
    for tenant in (alpha, beta):
        with schema_context(tenant.schema_name):
            runs = JobRun.objects.filter(job=job, period=committed_runs)
            assert runs.count() == 1 and runs.get().status == JobStatus.SUCCEEDED


def _wait_until_idle(timeout: float = 30) -> None:
    """Until the broker's queues are empty and the worker holds no task."""
    import time

    from celery.worker import state

    deadline = time.monotonic() + timeout
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        while time.monotonic() < deadline:
            queued = sum(client.llen(queue) for queue in ("default", "periodic"))
            if not queued and not state.active_requests and not state.reserved_requests:
                return
            time.sleep(0.2)


def _wait_for_runs(tenants: list[Tenant], period: str, timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = 0
        for tenant in tenants:
            with schema_context(tenant.schema_name):
                done += JobRun.objects.filter(period=period, status=JobStatus.SUCCEEDED).exists()
        if done == len(tenants):
            time.sleep(1)  # give a duplicate, if any, the time to show up
            return
        time.sleep(0.2)
    raise AssertionError("the dispatched jobs did not finish")


def test_job_run_claims_once_and_a_failed_run_can_be_retried(alpha):
    with schema_context(alpha.schema_name):
        with pytest.raises(RuntimeError), job_run("demo", "p1") as counts:
            assert counts is not None
            raise RuntimeError("disk gone")
        run = JobRun.objects.get(job="demo", period="p1")
        assert run.status == JobStatus.FAILED and "disk gone" in run.error
        with job_run("demo", "p1") as counts:  # the retry
            assert counts is not None
            counts.add("done")
        with job_run("demo", "p1") as counts:  # already succeeded: skipped
            assert counts is None
        run.refresh_from_db()
        assert run.status == JobStatus.SUCCEEDED and run.counts == {"done": 1}
