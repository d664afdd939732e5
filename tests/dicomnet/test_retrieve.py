"""Pull studies found on a remote node into the archive: C-MOVE as SCU, the node (DCMTK's
dcmqrscp here) sending to the tenant's AE title, the gateway ingesting what arrives; a job
with the node's counts, audited, and only the tenant's own nodes and studies."""

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client
from django_tenants.utils import schema_context
from pydicom.uid import generate_uid

from accounts.models import Role
from accounts.services import user_create
from audit.models import AuditEvent
from configuration.models import RemoteNode
from dicomnet.retrieve import retrieve_job_run
from studies.models import RetrieveJob, RetrieveJobStatus, Study
from tests.configuration.test_echo import free_port
from tests.conftest import PASSWORD, logged_in, tenant_client
from tests.dicomnet.test_gateway import Site, gateway_port, storescu  # noqa: F401
from tests.studies.index.test_study_pages import dicom

pytestmark = pytest.mark.live

DCMQRSCP = "/usr/bin/dcmqrscp"
REMOTE_AE = "REMOTEQR"


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, "dcmqrscp exited"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail("dcmqrscp did not listen")


@pytest.fixture
def remote(tmp_path: Path, sites, gateway_port) -> Iterator[tuple[int, list[Path]]]:  # noqa: F811
    """dcmqrscp holding one study of three instances; it knows site A's AE title (moves go
    to the gateway) and not site B's."""
    a, _ = sites
    database = tmp_path / "qr"
    database.mkdir()
    port = free_port()
    config = tmp_path / "dcmqrscp.cfg"
    config.write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n"
        "HostTable BEGIN\n"
        f"archive = ({a.ae}, 127.0.0.1, {gateway_port})\n"
        "HostTable END\n"
        "VendorTable BEGIN\nVendorTable END\n"
        "AETable BEGIN\n"
        f"{REMOTE_AE} {database} RW (20, 64mb) ANY\n"
        "AETable END\n"
    )
    process = subprocess.Popen(
        [DCMQRSCP, "-c", str(config), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    study = generate_uid()
    files = []
    for n in range(3):
        path = tmp_path / f"{n}.dcm"
        path.write_bytes(dicom(StudyInstanceUID=study, PatientName="REMOTE^PULLED"))
        files.append(path)
    try:
        wait_for_port(port, process)
        for path in files:
            assert storescu(port, REMOTE_AE, path, "LOADER").returncode == 0
        yield port, files
    finally:
        process.terminate()
        process.wait(timeout=10)


def study_uid_of(files: list[Path]) -> str:
    import pydicom

    return str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


@pytest.fixture(autouse=True)
def queued(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The retrievals handed to the workers; the tests run them here (`retrieve_job_run`)."""
    from studies import tasks

    sent: list[int] = []
    monkeypatch.setattr(tasks.retrieve_from_node, "delay", sent.append)
    return sent


def admin_client(site: Site) -> Client:
    with schema_context(site.tenant.schema_name):
        username = f"ops{generate_uid()[-6:]}"
        user_create(
            username=username, email="ops@example.org", role=Role.OPERATOR, password=PASSWORD
        )
    return logged_in(tenant_client(site.tenant), username)


def test_a_found_study_is_retrieved_into_the_archive_through_the_gateway(
    sites, remote, settings, queued
) -> None:
    settings.PORTAL_DICOM_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    a, b = sites
    port, files = remote
    study_uid = study_uid_of(files)
    with schema_context(a.tenant.schema_name):
        node = RemoteNode.objects.create(ae_title=REMOTE_AE, host="127.0.0.1", port=port)
    client = admin_client(a)
    found = client.get("/studies/remote/", {"node": node.pk, "patient_name": "REMOTE*"})
    page = found.content.decode()
    assert study_uid in page and f'name="study" value="{study_uid}"' in page
    assert f"<code>{a.ae}</code>" in page  # what the node must know

    response = client.post(
        "/studies/remote/retrieve/",
        {"node": node.pk, "study": [study_uid], f"label-{study_uid}": "REMOTE^PULLED"},
    )
    assert response.status_code == 302 and response["Location"].startswith("/studies/retrievals/")
    assert len(queued) == 1
    with schema_context(a.tenant.schema_name):
        job = retrieve_job_run(RetrieveJob.objects.get(study_instance_uid=study_uid).pk)
        assert (job.status, job.total, job.completed, job.failed) == (
            RetrieveJobStatus.DONE,
            3,
            3,
            0,
        ), job.error
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            study = Study.objects.filter(study_instance_uid=study_uid).first()
            if study is not None and study.num_instances == 3:
                break
            time.sleep(0.1)
        assert study is not None and study.num_instances == 3
        assert str(study.patient_name) == "REMOTE^PULLED"
        actions = set(AuditEvent.objects.values_list("action", flat=True))
        assert {"node.retrieve", "node.retrieve.finished"} <= actions
    progress = client.get(job_url := f"/studies/retrievals/{job.pk}/").content.decode()
    assert "3 of 3 instances (100 %)" in progress and "Open the study" in progress
    assert "hx-trigger" not in progress
    listed = client.get("/jobs/", {"kind": "retrieve"}).content.decode()
    assert f'href="{job_url}"' in listed and f"{REMOTE_AE}@127.0.0.1" in listed
    # Found again, the study is here: it cannot be ticked a second time.
    again = client.get("/studies/remote/", {"node": node.pk, "patient_name": "REMOTE*"})
    assert "in this archive" in again.content.decode()

    # The other tenant sees neither the job nor the study, nor can it use A's node.
    other = admin_client(b)
    assert other.get(job_url).status_code == 404
    with schema_context(b.tenant.schema_name):
        assert not Study.objects.filter(study_instance_uid=study_uid).exists()
    refused = other.post("/studies/remote/retrieve/", {"node": node.pk, "study": [study_uid]})
    assert refused.status_code == 302
    with schema_context(b.tenant.schema_name):
        assert not RetrieveJob.objects.exists()
    connection.set_schema_to_public()


def test_a_node_that_does_not_know_the_archive_says_what_to_configure(
    sites, remote, settings
) -> None:
    settings.PORTAL_DICOM_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    _, b = sites  # dcmqrscp's host table has no entry for B's AE title
    port, files = remote
    client = admin_client(b)
    with schema_context(b.tenant.schema_name):
        node = RemoteNode.objects.create(ae_title=REMOTE_AE, host="127.0.0.1", port=port)
    uid = study_uid_of(files)
    client.post("/studies/remote/retrieve/", {"node": node.pk, "study": [uid]})
    with schema_context(b.tenant.schema_name):
        job = retrieve_job_run(RetrieveJob.objects.get(study_instance_uid=uid).pk)
        assert job.status == RetrieveJobStatus.FAILED
        assert f"does not know this archive's AE title {b.ae}" in job.error
        assert not Study.objects.filter(study_instance_uid=uid).exists()
    connection.set_schema_to_public()


def test_what_may_be_asked(sites, settings) -> None:
    a, _ = sites
    with schema_context(a.tenant.schema_name):
        node = RemoteNode.objects.create(ae_title="NOWHERE", host="127.0.0.1", port=free_port())
    client = admin_client(a)
    for body, reason in (
        ({"node": node.pk}, "Tick the studies"),
        ({"node": node.pk, "study": ["1.2.x"]}, "not a Study Instance UID"),
        ({"node": node.pk, "study": [f"1.2.{n}" for n in range(21)]}, "At most 20"),
    ):
        response = client.post("/studies/remote/retrieve/", body, follow=True)
        assert reason in response.content.decode()
    with schema_context(a.tenant.schema_name):
        assert not RetrieveJob.objects.filter(node=node).exists()
        viewer = f"v{generate_uid()[-6:]}"
        user_create(username=viewer, email="v@example.org", role=Role.VIEWER, password=PASSWORD)
    looker = logged_in(tenant_client(a.tenant), viewer)
    assert looker.post("/studies/remote/retrieve/", {"node": node.pk}).status_code == 403

    # A node that does not answer: the job ends and says so.
    settings.PORTAL_DICOM_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    client.post("/studies/remote/retrieve/", {"node": node.pk, "study": ["1.2.3"]})
    with schema_context(a.tenant.schema_name):
        job = retrieve_job_run(RetrieveJob.objects.get(node=node).pk)
        assert job.status == RetrieveJobStatus.FAILED and "did not answer" in job.error
        # Run a second time (a redelivered task), an ended job stays as it ended.
        assert retrieve_job_run(job.pk).status == RetrieveJobStatus.FAILED
    connection.set_schema_to_public()


def test_a_study_is_pulled_from_another_tenant_of_this_gateway(
    sites,
    gateway_port,  # noqa: F811 (the fixture)
    settings,
    tmp_path,
) -> None:
    """Tenant B's archive as tenant A's remote node: A queries and pulls a study of B's
    through the gateway (B's C-MOVE SCP stores into A's AE title), and only that study."""
    settings.PORTAL_DICOM_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    a, b = sites
    study = generate_uid()
    for n in range(2):
        path = tmp_path / f"b{n}.dcm"
        path.write_bytes(dicom(StudyInstanceUID=study, PatientName="PULLED^FROMB"))
        assert storescu(gateway_port, b.ae, path).returncode == 0
    with schema_context(a.tenant.schema_name):
        node_b = RemoteNode.objects.create(ae_title=b.ae, host="127.0.0.1", port=gateway_port)
    with schema_context(b.tenant.schema_name):
        # B answers A's queries and may move to A's title: A is one of its remote nodes.
        RemoteNode.objects.create(ae_title=a.ae, host="127.0.0.1", port=gateway_port)
    client = admin_client(a)
    found = client.get("/studies/remote/", {"node": node_b.pk, "patient_name": "PULLED*"})
    assert f'name="study" value="{study}"' in found.content.decode()
    client.post("/studies/remote/retrieve/", {"node": node_b.pk, "study": [study]})
    with schema_context(a.tenant.schema_name):
        job = retrieve_job_run(RetrieveJob.objects.get(study_instance_uid=study).pk)
        assert (job.status, job.completed, job.failed) == (RetrieveJobStatus.DONE, 2, 0), job.error
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pulled = Study.objects.filter(study_instance_uid=study).first()
            if pulled is not None and pulled.num_instances == 2:
                break
            time.sleep(0.1)
        assert pulled is not None and pulled.num_instances == 2
    with schema_context(b.tenant.schema_name):
        assert Study.objects.get(study_instance_uid=study).num_instances == 2  # B keeps its own
    connection.set_schema_to_public()


def test_a_node_cannot_overflow_the_counters_with_its_numbers(sites) -> None:
    from pydicom.dataset import Dataset

    from dicomnet.retrieve import MAX_COUNT, _count

    status = Dataset()
    status.NumberOfCompletedSuboperations = 2**31 - 1
    status.NumberOfRemainingSuboperations = 2**31 - 1
    status.NumberOfFailedSuboperations = -5  # not a count: ignored
    job = RetrieveJob(source="X@h:1", study_instance_uid="1.2.3")
    _count(job, status)
    assert job.completed == 0 and job.failed == 0  # out of bounds: not believed
    status.NumberOfCompletedSuboperations = MAX_COUNT
    _count(job, status)
    assert job.completed == MAX_COUNT and job.total == MAX_COUNT
