"""A Celery worker killed with SIGKILL in the middle of a multipart upload to object storage:
no index row, no visible object, the job finishes on the next worker, and the parts the dead
upload left are aborted (RELIABILITY.md, killed workers)."""

import io
import os
import signal
import time

import psutil
import pydicom
import pytest
from django_tenants.utils import schema_context

from studies.ingest import ingest_item_stage, ingest_job_create, ingest_job_submit
from studies.media import objectstore, services
from studies.models import IngestJob, IngestJobStatus, Instance
from tests.studies.ingest.test_upload_worker import (  # noqa: F401 (fixtures)
    VISIBILITY_TIMEOUT,
    _start_worker,
    _stop,
    committed_tenant,
    ct_file,
    unblocked,
)
from tests.studies.media.s3 import ACCESS_KEY, SECRET_KEY, direct_client, keys, sha256_of

pytestmark = pytest.mark.worker
PART = 5 << 20  # the smallest part S3 accepts


def _wait(condition, seconds: float, why: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, why
        time.sleep(0.05)


def test_a_worker_killed_mid_multipart_upload_leaves_no_row_and_no_object(
    committed_tenant,  # noqa: F811
    unblocked,  # noqa: F811
    s3,
    settings,
    monkeypatch,
    tmp_path,
):
    settings.PORTAL_S3_MULTIPART_BYTES = PART
    monkeypatch.setenv("PORTAL_S3_ALLOWED_ENDPOINTS", s3.url)
    monkeypatch.setenv("PORTAL_S3_MULTIPART_BYTES", str(PART))
    data = ct_file(side=2048)  # 8 MiB of pixels: two parts
    assert len(data) > PART
    with schema_context(committed_tenant.schema_name):
        medium = services.medium_create(
            tenant=committed_tenant,
            name=f"bucket-{s3.bucket[-6:]}",
            root="",
            kind="s3",
            capacity_bytes=1 << 30,
            priority=100,
            endpoint_url=s3.url,
            bucket=s3.bucket,
            access_key_id=ACCESS_KEY,
            secret_key=SECRET_KEY,
        )
        before = Instance.objects.count()
        job = ingest_job_create(source="rest", description="killed mid-upload")
        ingest_item_stage(job=job, name="big.dcm", stream=io.BytesIO(data))
    # The second part is held at the proxy: the first is in the bucket when the kill lands.
    s3.proxy.clear()
    s3.proxy.add("hold", lambda method, path: method == "PUT" and "partNumber=2" in path)
    log = tmp_path / "worker.log"
    with schema_context(committed_tenant.schema_name):
        ingest_job_submit(job=job)
    first = _start_worker(log)
    try:
        _wait(lambda: s3.proxy.held.is_set() or first.poll() is not None, 90, log.read_text())
        assert first.poll() is None, log.read_text()
        for child in psutil.Process(first.pid).children(recursive=True):
            os.kill(child.pid, signal.SIGKILL)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        s3.proxy.release.set()
        _stop(first)
    client = direct_client(s3.url)
    with schema_context(committed_tenant.schema_name):
        assert Instance.objects.count() == before
    assert keys(s3.url, s3.bucket, medium.key_prefix) == {}
    pending = client.list_multipart_uploads(Bucket=s3.bucket, Prefix=medium.key_prefix)
    assert len(pending.get("Uploads", [])) == 1

    time.sleep(VISIBILITY_TIMEOUT + 1)
    second = _start_worker(log)
    try:
        with schema_context(committed_tenant.schema_name):
            _wait(
                lambda: IngestJob.objects.get(pk=job.pk).status in {"done", "failed"},
                120,
                log.read_text()[-3000:],
            )
    finally:
        _stop(second)

    with schema_context(committed_tenant.schema_name):
        job.refresh_from_db()
        assert (job.status, job.stored) == (IngestJobStatus.DONE, 1)
        sop = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID
        row = Instance.objects.select_related("medium").get(sop_instance_uid=sop)
        assert row.medium_id == medium.pk
        stored = keys(s3.url, s3.bucket, medium.key_prefix)
        assert stored == {medium.key_prefix + row.relative_path: len(data)}
        assert sha256_of(s3, medium.key_prefix + row.relative_path) == row.sha256
        # The dead upload's part costs storage until aborted; the usage job does that.
        store = objectstore.ObjectStore(medium)
        assert store.abort_stale_uploads(older_than_seconds=0) == 1
    pending = client.list_multipart_uploads(Bucket=s3.bucket, Prefix=medium.key_prefix)
    assert pending.get("Uploads", []) == []
