"""Query a remote node (C-FIND SCU) from the study list: the node's answers listed, the
query audited, only the tenant's own nodes, and an unreachable node said so."""

import pytest
from django_tenants.utils import schema_context
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from accounts.models import Role
from audit.models import AuditEvent
from configuration.models import RemoteNode
from tests.configuration.test_echo import free_port


@pytest.fixture
def remote_archive():
    """A pynetdicom C-FIND SCP holding two studies; keeps what it was asked and by whom."""
    asked: list[tuple[str, Dataset]] = []
    uids = [generate_uid(), generate_uid()]

    def find(event):  # type: ignore[no-untyped-def]
        asked.append((event.assoc.requestor.ae_title, event.identifier))
        for n, uid in enumerate(uids):
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.PatientName, ds.PatientID = f"REMOTE^PATIENT{n}", f"R{n}"
            ds.StudyInstanceUID, ds.StudyDate, ds.StudyDescription = uid, "20240102", "CT chest"
            yield 0xFF00, ds

    ae = AE(ae_title="REMOTEPACS")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    port = free_port()
    server = ae.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_FIND, find)]
    )
    try:
        yield port, uids, asked
    finally:
        server.shutdown()


def test_a_query_lists_the_nodes_studies_and_is_audited(client_as, alpha, remote_archive):
    port, uids, asked = remote_archive
    with schema_context(alpha.schema_name):
        node = RemoteNode.objects.create(ae_title="REMOTEPACS", host="127.0.0.1", port=port)
    client = client_as(Role.OPERATOR)
    assert 'href="/studies/remote/"' in client.get("/studies/").content.decode()
    page = client.get(
        "/studies/remote/", {"node": node.pk, "patient_name": "REMOTE*"}
    ).content.decode()
    assert "2 studies at" in page and "REMOTE^PATIENT0" in page and uids[1] in page
    ((calling, identifier),) = asked
    assert calling == alpha.ae_title and identifier.PatientName == "REMOTE*"
    assert identifier.QueryRetrieveLevel == "STUDY"
    with schema_context(alpha.schema_name):
        event = AuditEvent.objects.get(action="node.find")
    assert event.details["matches"] == 2 and event.details["keys"] == {"PatientName": "REMOTE*"}


def test_a_query_for_everything_an_unreachable_node_and_other_tenants(
    client_as, alpha, beta, remote_archive
):
    port, _, asked = remote_archive
    with schema_context(alpha.schema_name):
        down = RemoteNode.objects.create(ae_title="DOWN", host="127.0.0.1", port=free_port())
    with schema_context(beta.schema_name):
        theirs = RemoteNode.objects.create(ae_title="REMOTEPACS", host="127.0.0.1", port=port)
    client = client_as(Role.OPERATOR)
    empty = client.get("/studies/remote/", {"node": down.pk}).content.decode()
    assert "a query for everything is refused" in empty
    failed = client.get("/studies/remote/", {"node": down.pk, "patient_id": "X"}).content.decode()
    assert "did not answer" in failed
    other = client.get("/studies/remote/", {"node": theirs.pk + 1000, "patient_id": "X"})
    assert "Select a valid choice" in other.content.decode() and asked == []
    assert client_as(Role.VIEWER).get("/studies/remote/").status_code == 403


def test_a_node_that_answers_too_slowly_is_cut_off(client_as, alpha, remote_archive, monkeypatch):
    port, _, _ = remote_archive
    monkeypatch.setattr("dicomnet.remote.DEADLINE_SECONDS", -1)  # every answer is too late
    with schema_context(alpha.schema_name):
        node = RemoteNode.objects.create(ae_title="REMOTEPACS", host="127.0.0.1", port=port)
    page = (
        client_as(Role.OPERATOR)
        .get("/studies/remote/", {"node": node.pk, "patient_id": "R0"})
        .content.decode()
    )
    assert "narrow the query" in page and "REMOTE^PATIENT0" not in page
