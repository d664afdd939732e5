"""C-ECHO of remote nodes against DCMTK's storescp: success, refusal, wrong listener, timeout."""

import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from django_tenants.utils import schema_context

from configuration.dicom import echo
from tenants.models import Tenant
from tests.configuration.conftest import add_node, audit_of, nodes_of
from tests.conftest import require_tool


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_storescp(*options: str) -> tuple[subprocess.Popen[bytes], int]:
    require_tool("/usr/bin/storescp", "DCMTK")
    port = free_port()
    process = subprocess.Popen(
        ["/usr/bin/storescp", "--aetitle", "ECHOSCP", *options, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        # Look for the listening socket instead of connecting: storescp serves one
        # connection at a time, and a probe connection would race with the test's own.
        if is_listening(port):
            return process, port
        time.sleep(0.05)
    process.kill()
    pytest.fail("storescp did not start listening")


def is_listening(port: int) -> bool:
    """Whether a TCP socket listens on `port` (Linux /proc/net/tcp, state 0A = LISTEN)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]  # noqa: SIM115
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


@pytest.fixture
def storescp() -> Iterator[int]:
    process, port = start_storescp()
    yield port
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def refusing_storescp() -> Iterator[int]:
    process, port = start_storescp("--refuse")
    yield port
    process.terminate()
    process.wait(timeout=10)


def test_echo_succeeds_against_storescp(storescp):
    result = echo(calling_ae="ALPHA", ae_title="ECHOSCP", host="127.0.0.1", port=storescp)
    assert result.ok and result.rtt_ms is not None and result.rtt_ms >= 0
    assert result.message == f"ECHOSCP at 127.0.0.1:{storescp} answered the C-ECHO."


def test_a_rejected_association_says_so(refusing_storescp):
    result = echo(calling_ae="ALPHA", ae_title="ECHOSCP", host="127.0.0.1", port=refusing_storescp)
    assert not result.ok
    # storescp --refuse sends A-ASSOCIATE-RJ and closes at once; pynetdicom sometimes sees
    # the close before the reject PDU. Either way the user is told the echo failed and why.
    assert ("rejected the association" in result.message and "ALPHA" in result.message) or (
        "closed the connection without a DICOM answer" in result.message
    )


def test_a_closed_port_is_connection_refused():
    port = free_port()
    result = echo(calling_ae="ALPHA", ae_title="ECHOSCP", host="127.0.0.1", port=port)
    assert not result.ok
    assert (
        result.message == f"Connection to 127.0.0.1:{port} refused: nothing listens on that port."
    )


def test_a_service_that_is_not_dicom_is_named_as_such(hang_up_listener):
    port, _ = hang_up_listener
    result = echo(calling_ae="ALPHA", ae_title="ECHOSCP", host="127.0.0.1", port=port)
    assert not result.ok and "without a DICOM answer" in result.message


def test_a_silent_listener_times_out():
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        result = echo(calling_ae="A", ae_title="B", host="127.0.0.1", port=port, timeout=1)
    assert not result.ok and result.message == f"No DICOM answer from 127.0.0.1:{port} within 1 s."


def test_an_unknown_host_name_is_a_dns_failure():
    result = echo(calling_ae="A", ae_title="B", host="no-such-node.invalid", port=104)
    assert not result.ok and "could not be resolved" in result.message


def test_test_button_keeps_the_status_and_answers_htmx_inline(
    alpha, alpha_admin, alpha_admin_client, storescp
):
    node = add_node(alpha, ae_title="ECHOSCP", host="127.0.0.1", port=storescp)
    response = alpha_admin_client.post(f"/settings/nodes/{node.pk}/echo/", HTTP_HX_REQUEST="true")
    fragment = response.content.decode()
    assert response.status_code == 200 and fragment.startswith(f'<td id="node-status-{node.pk}"')
    assert "OK" in fragment and "answered the C-ECHO" in fragment and " ms)" in fragment
    [saved] = nodes_of(alpha)
    assert saved.last_echo_ok is True and saved.last_echo_at is not None
    [event] = audit_of(alpha, "node.echo")
    assert event.outcome == "success" and event.actor == alpha_admin
    assert event.details["calling_ae"] == "ALPHA"


def test_test_button_without_javascript_redirects_with_a_message(alpha, alpha_admin_client):
    node = add_node(alpha, ae_title="GONE", host="127.0.0.1", port=free_port())
    response = alpha_admin_client.post(f"/settings/nodes/{node.pk}/echo/")
    assert response.status_code == 302 and response["Location"].endswith("/settings/#nodes")
    page = alpha_admin_client.get("/settings/").content.decode()
    assert "C-ECHO GONE@127.0.0.1" in page and "refused" in page and "Failed" in page
    assert nodes_of(alpha)[0].last_echo_ok is False
    assert audit_of(alpha, "node.echo")[0].outcome == "failure"


def test_a_tenant_without_ae_title_calls_as_pacsportal(alpha, alpha_admin, storescp):
    from configuration.services import node_echo

    node = add_node(alpha, ae_title="ECHOSCP", host="127.0.0.1", port=storescp)
    Tenant.objects.filter(pk=alpha.pk).update(ae_title=None)
    alpha.refresh_from_db()
    with schema_context(alpha.schema_name):
        result = node_echo(node=node, tenant=alpha, actor=alpha_admin)
    assert result.ok
    assert audit_of(alpha, "node.echo")[0].details["calling_ae"] == "PACSPORTAL"


def test_api_echo_returns_the_result_and_the_node(alpha, api_as, storescp):
    node = add_node(alpha, ae_title="ECHOSCP", host="127.0.0.1", port=storescp)
    body = api_as(alpha).post(f"/api/v1/nodes/{node.pk}/echo/").json()
    assert body["ok"] is True and body["rtt_ms"] is not None
    assert body["node"]["last_echo_ok"] is True and body["node"]["id"] == node.pk
