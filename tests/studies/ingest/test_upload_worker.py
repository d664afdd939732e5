"""Ingest on real Celery workers: a REST upload processed in its tenant's schema, and a job
that survives its worker being killed with SIGKILL mid-batch (RELIABILITY.md, killed workers).

These tests commit: they use their own tenant, created for the module and purged after.
"""

import io
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import numpy as np
import psutil
import pydicom
import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django.db import connections
from django.db.models import Count, Sum
from django_tenants.utils import schema_context
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from accounts.models import Role, TokenScope
from accounts.services import api_token_create, user_create
from portal.celery import app
from studies.ingest import BATCH_SIZE, ingest_item_stage, ingest_job_create, ingest_job_submit
from studies.models import IngestJob, IngestJobStatus, Instance, ItemOutcome, Series, Study
from studies.storage import instance_path
from tenants.models import Tenant, TenantStatus
from tenants.services import tenant_create, tenant_delete, tenant_purge
from tests.conftest import tenant_client

pytestmark = pytest.mark.worker
PROJECT_ROOT = Path(__file__).resolve().parents[3]
VISIBILITY_TIMEOUT = 5


@pytest.fixture(scope="module")
def committed_tenant(django_db_setup, django_db_blocker) -> Iterator[Tenant]:  # type: ignore[no-untyped-def]
    slug = f"wk-{uuid.uuid4().hex[:8]}"
    with pytest.MonkeyPatch.context() as patch:
        # Playwright's sync API (browser tests, earlier in the session) keeps an event loop
        # on this thread; these queries are plain synchronous ones all the same.
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with django_db_blocker.unblock():
            tenant = tenant_create(
                slug=slug, name="Worker Test", admin_email="a@example.org", created_by="tests"
            ).tenant
        yield tenant
        with django_db_blocker.unblock():
            tenant = Tenant.all_objects.get(pk=tenant.pk)
            if tenant.status in {TenantStatus.ACTIVE, TenantStatus.SUSPENDED}:
                tenant = tenant_delete(tenant=tenant, actor="tests", confirm_slug=slug)
            tenant_purge(tenant=tenant)


@pytest.fixture
def unblocked(django_db_blocker) -> Iterator[None]:  # type: ignore[no-untyped-def]
    with django_db_blocker.unblock():
        yield


def ct_file(side: int = 64, study: str | None = None, series: str | None = None) -> bytes:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study or ds.StudyInstanceUID
    ds.SeriesInstanceUID = series or ds.SeriesInstanceUID
    if side != ds.Rows:
        ds.Rows = ds.Columns = side
        ds.PixelData = np.arange(side * side, dtype=np.uint16).tobytes()
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def test_a_rest_upload_is_processed_by_the_worker_in_the_tenants_schema(
    committed_tenant, unblocked
):
    with schema_context(committed_tenant.schema_name):
        user = user_create(
            username=f"op{uuid.uuid4().hex[:6]}", email="o@example.org", role=Role.OPERATOR
        )
        _, raw = api_token_create(user=user, name="scanner", scope=TokenScope.STORE)
    client = tenant_client(committed_tenant, HTTP_AUTHORIZATION=f"Bearer {raw}")
    with start_worker(
        app, pool="solo", concurrency=1, perform_ping_check=False, queues=["default"]
    ):
        data = ct_file()
        response = client.post("/api/v1/ingest/", data=data, content_type="application/dicom")
        assert response.status_code == 202, response.content
        job_id = response.json()["id"]
        deadline = time.monotonic() + 30
        while client.get(f"/api/v1/ingest/{job_id}/").json()["status"] not in {"done", "failed"}:
            assert time.monotonic() < deadline, "the worker did not finish the job"
            time.sleep(0.2)
    assert client.get(f"/api/v1/ingest/{job_id}/").json()["stored"] == 1
    sop = pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID
    with schema_context(committed_tenant.schema_name):
        assert Instance.objects.filter(sop_instance_uid=sop).count() == 1
    for other in Tenant.objects.filter(slug__in=["alpha", "beta"]):
        with schema_context(other.schema_name):
            assert not Instance.objects.filter(sop_instance_uid=sop).exists()


def _test_database_url() -> str:
    test_name = connections["default"].settings_dict["NAME"]
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + quote(test_name)))


def _start_worker(log: Path) -> subprocess.Popen[bytes]:
    env = {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": _test_database_url(),
        "PORTAL_STORAGE_ROOT": str(settings.PORTAL_STORAGE_ROOT),
        "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
        "PYTHONUNBUFFERED": "1",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "portal", "worker", "-Q", "default", "-c", "1",
             "-P", "prefork", "--without-heartbeat", "--without-gossip", "--without-mingle",
             "-l", "warning"],
            cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _broker_state() -> dict[str, object]:
    import redis

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    return {
        "queued": client.llen("default"),
        "unacked": client.hlen("unacked"),
        "index": client.zrange("unacked_index", 0, -1, withscores=True),
        "mutex": client.get("unacked_mutex"),
        "now": time.time(),
    }


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_job_survives_its_worker_killed_mid_batch(committed_tenant, unblocked, tmp_path):
    # Five batches of BATCH_SIZE: each commits whole, so the kill lands between commits.
    total = 5 * BATCH_SIZE
    study, series = generate_uid(), generate_uid()
    with schema_context(committed_tenant.schema_name):
        before = Instance.objects.count()
        job = ingest_job_create(source="rest", description="kill test")
        for number in range(total):
            data = ct_file(side=512, study=study, series=series)
            ingest_item_stage(job=job, name=f"f{number}.dcm", stream=io.BytesIO(data))
        ingest_job_submit(job=job)  # autocommit: the batch is sent to the broker right away
    log = tmp_path / "worker.log"
    first = _start_worker(log)
    try:
        deadline = time.monotonic() + 60
        with schema_context(committed_tenant.schema_name):
            while IngestJob.objects.get(pk=job.pk).stored < 1:
                assert first.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the worker never stored a file\n" + (
                    log.read_text()
                )
                time.sleep(0.02)
            children = psutil.Process(first.pid).children(recursive=True)
            for child in children:
                os.kill(child.pid, signal.SIGKILL)
            os.kill(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
            stored_at_kill = IngestJob.objects.get(pk=job.pk).stored
    finally:
        _stop(first)
    assert 0 < stored_at_kill < total, "the kill did not land mid-batch"
    # The broker hands the unacknowledged batch out again once it is older than the
    # visibility timeout; a worker sweeps for such messages when it starts, then rarely.
    time.sleep(VISIBILITY_TIMEOUT + 1)
    second = _start_worker(log)
    try:
        deadline = time.monotonic() + 90
        with schema_context(committed_tenant.schema_name):
            while IngestJob.objects.get(pk=job.pk).status not in {"done", "failed"}:
                assert second.poll() is None, log.read_text()
                assert time.monotonic() < deadline, (
                    f"the job was not redelivered: {_broker_state()} "
                    f"{IngestJob.objects.filter(pk=job.pk).values()[0]}\n{log.read_text()[-3000:]}"
                )
                time.sleep(0.2)
    finally:
        _stop(second)

    with schema_context(committed_tenant.schema_name):
        job.refresh_from_db()
        assert (job.status, job.total, job.stored, job.duplicates, job.rejected) == (
            IngestJobStatus.DONE,
            total,
            total,
            0,
            0,
        )
        assert not job.items.filter(outcome=ItemOutcome.PENDING).exists()
        assert job.items.filter(outcome=ItemOutcome.STORED).count() == total
        instances = Instance.objects.filter(series__series_instance_uid=series)
        assert instances.count() == total == Instance.objects.count() - before
        assert (
            not Instance.objects.values("sop_instance_uid")
            .annotate(n=Count("id"))
            .filter(n__gt=1)
            .exists()
        )
        row = Study.objects.get(study_instance_uid=study)
        assert (row.num_series, row.num_instances) == (1, total)
        assert row.size_bytes == instances.aggregate(s=Sum("size_bytes"))["s"]
        assert Series.objects.get(series_instance_uid=series).num_instances == total
        expected = {instance_path(i) for i in instances}
        medium_root = Path(instances.first().medium.root)
        on_disk = {p.resolve() for p in (medium_root / study).rglob("*") if p.is_file()}
        assert on_disk == expected  # no orphans, no temp files
        assert not list(medium_root.rglob("*.tmp"))
