"""Send a study or a series to a remote node: a job a worker runs (C-STORE as SCU), with its
progress and each failed instance, audited, and only the tenant's own studies and nodes."""

from pathlib import Path

import pydicom
import pytest
from django_tenants.utils import schema_context
from pydicom.uid import generate_uid

from accounts.models import Role
from audit.models import AuditEvent
from configuration.models import RemoteNode
from dicomnet.send import send_job_run
from studies.models import SendJob, SendJobStatus
from tests.configuration.test_echo import free_port, start_storescp
from tests.studies.conftest import storage  # noqa: F401  (the fixture: files cleaned up)
from tests.studies.index.test_study_pages import dicom, store


@pytest.fixture
def receiver(tmp_path):
    """A DCMTK storescp writing what it receives into a folder."""
    folder = tmp_path / "received"
    folder.mkdir()
    process, port = start_storescp("+xa", "-od", str(folder))
    yield port, folder
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def study(alpha, request):
    request.getfixturevalue("storage")  # the stored files are cleaned up afterwards
    study_uid, series = generate_uid(), [generate_uid(), generate_uid()]
    store(
        alpha,
        dicom(StudyInstanceUID=study_uid, SeriesInstanceUID=series[0], PatientName="SEND^ME"),
        dicom(StudyInstanceUID=study_uid, SeriesInstanceUID=series[0]),
        dicom(StudyInstanceUID=study_uid, SeriesInstanceUID=series[1]),
    )
    return study_uid, series


def node(tenant, port: int, title: str = "ECHOSCP") -> RemoteNode:
    with schema_context(tenant.schema_name):
        return RemoteNode.objects.create(ae_title=title, host="127.0.0.1", port=port)


def send(client, tenant, study_uid: str, target: RemoteNode, series: str = "") -> SendJob:
    """Ask on the study page, then do what the worker does with the queued task."""
    response = client.post(f"/studies/{study_uid}/send/", {"node": target.pk, "series": series})
    assert response.status_code == 302 and response["Location"].startswith("/studies/sends/")
    with schema_context(tenant.schema_name):
        job = SendJob.objects.latest("id")
        return send_job_run(job.pk)


def received(folder: Path) -> set[str]:
    return {str(pydicom.dcmread(path).SOPInstanceUID) for path in folder.iterdir()}


def test_a_study_and_then_one_series_arrive_at_the_node(
    client_as, alpha, study, receiver, django_capture_on_commit_callbacks
):
    study_uid, series = study
    port, folder = receiver
    target = node(alpha, port)
    client = client_as(Role.OPERATOR)
    page = client.get(f"/studies/{study_uid}/").content.decode()
    assert "Send to a remote node" in page and f'<option value="{target.pk}"' in page
    with django_capture_on_commit_callbacks(execute=False) as queued:
        job = send(client, alpha, study_uid, target)
    assert len(queued) == 1  # the task goes to a worker after the commit
    assert (job.status, job.total, job.sent, job.failed) == (SendJobStatus.DONE, 3, 3, 0)
    assert len(received(folder)) == 3
    progress = client.get(f"/studies/sends/{job.pk}/").content.decode()
    assert "3 of 3 instances (100 %)" in progress and "hx-trigger" not in progress
    listed = client.get("/jobs/", {"kind": "send"}).content.decode()
    assert f'href="/studies/sends/{job.pk}/"' in listed and "ECHOSCP@127.0.0.1" in listed

    for path in folder.iterdir():
        path.unlink()
    with django_capture_on_commit_callbacks(execute=False):
        job = send(client, alpha, study_uid, target, series=series[1])
    assert (job.status, job.sent) == (SendJobStatus.DONE, 1) and len(received(folder)) == 1
    with schema_context(alpha.schema_name):
        actions = list(AuditEvent.objects.filter(object_type="sendjob").values_list("action"))
    assert actions.count(("study.send",)) == 2 and actions.count(("study.send.finished",)) == 2


def test_an_unreachable_node_fails_the_job_with_the_reason(
    client_as, alpha, study, django_capture_on_commit_callbacks
):
    study_uid, _ = study
    target = node(alpha, free_port(), title="NOBODY")
    client = client_as(Role.ADMIN)
    with django_capture_on_commit_callbacks(execute=False):
        job = send(client, alpha, study_uid, target)
    assert job.status == SendJobStatus.FAILED and job.sent == 0
    assert "did not answer" in job.error
    assert "did not answer" in client.get(f"/studies/sends/{job.pk}/").content.decode()
    with schema_context(alpha.schema_name):
        finished = AuditEvent.objects.get(action="study.send.finished", object_id=str(job.pk))
    assert finished.outcome == "failure"


def test_viewers_may_not_send_and_other_tenants_see_nothing(
    client_as, alpha, beta, study, receiver, django_capture_on_commit_callbacks
):
    study_uid, _ = study
    port, folder = receiver
    target = node(alpha, port)
    beta_node = node(beta, port, title="BETANODE")
    viewer = client_as(Role.VIEWER)
    assert viewer.post(f"/studies/{study_uid}/send/", {"node": target.pk}).status_code == 403
    assert "Send to a remote node" not in viewer.get(f"/studies/{study_uid}/").content.decode()
    beta_admin = client_as(Role.ADMIN, beta)
    assert beta_admin.post(f"/studies/{study_uid}/send/", {"node": beta_node.pk}).status_code == 404
    # Alpha cannot aim at beta's node either: its id is not one of alpha's nodes.
    alpha_admin = client_as(Role.ADMIN)
    answer = alpha_admin.post(f"/studies/{study_uid}/send/", {"node": beta_node.pk + 1000})
    assert answer.status_code == 302 and answer["Location"] == f"/studies/{study_uid}/"
    with django_capture_on_commit_callbacks(execute=False):
        job = send(alpha_admin, alpha, study_uid, target)
    assert beta_admin.get(f"/studies/sends/{job.pk}/").status_code == 404
    assert list(folder.iterdir())  # what alpha sent did arrive


def test_ticked_studies_are_sent_or_deleted_after_a_confirmation(
    client_as, alpha, beta, study, receiver, django_capture_on_commit_callbacks
):
    from studies.models import Study

    study_uid, _ = study
    other = generate_uid()
    store(alpha, dicom(StudyInstanceUID=other, PatientName="SECOND^STUDY"))
    port, folder = receiver
    target = node(alpha, port)
    client = client_as(Role.OPERATOR)
    listing = client.get("/studies/").content.decode()
    assert 'form="bulk" name="uids"' in listing and 'action="/studies/bulk/"' in listing
    viewing = client_as(Role.VIEWER).get("/studies/").content.decode()
    assert 'name="uids"' in viewing and "Download zip" in viewing  # a viewer may download
    assert "Delete…" not in viewing and '<option value="send">' not in viewing

    with django_capture_on_commit_callbacks(execute=False):
        sent = client.post(
            "/studies/bulk/", {"action": "send", "node": target.pk, "uids": [study_uid, other]}
        )
    assert sent.status_code == 302 and sent["Location"] == "/jobs/?kind=send"
    with schema_context(alpha.schema_name):
        jobs = list(SendJob.objects.order_by("id"))
        assert {job.study_instance_uid for job in jobs} == {study_uid, other}
        for job in jobs:
            send_job_run(job.pk)
    assert len(received(folder)) == 4  # three instances and one

    # Delete: first a page naming them, then only a confirmed POST deletes.
    asked = client.post("/studies/bulk/", {"action": "delete", "uids": [study_uid, other]})
    assert asked.status_code == 200 and "Delete 2 studies?" in asked.content.decode()
    assert "SECOND^STUDY" in asked.content.decode()
    with schema_context(alpha.schema_name):
        assert Study.objects.filter(study_instance_uid__in=[study_uid, other]).count() == 2
    # Another tenant's UIDs in the list change nothing there.
    beta_uid = generate_uid()
    store(beta, dicom(StudyInstanceUID=beta_uid))
    done = client.post(
        "/studies/bulk/",
        {"action": "delete", "confirmed": "on", "uids": [study_uid, other, beta_uid]},
    )
    assert done.status_code == 302
    with schema_context(alpha.schema_name):
        assert not Study.objects.filter(study_instance_uid__in=[study_uid, other]).exists()
    with schema_context(beta.schema_name):
        assert Study.objects.filter(study_instance_uid=beta_uid).exists()
    assert client_as(Role.VIEWER).post("/studies/bulk/", {"action": "delete"}).status_code == 403
