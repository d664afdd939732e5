"""Remote nodes cannot turn the archive into a port scanner of its own network (SSRF)."""

import socket
import uuid

import pytest

from configuration import egress, services
from configuration.dicom import echo
from tests.configuration.conftest import add_node, audit_of, changes_of, nodes_of
from tests.configuration.test_echo import free_port, storescp  # noqa: F401  (fixture)
from tests.conftest import logged_in, tenant_client

NODE = {"ae_title": "CT_SCANNER", "port": "104", "description": ""}
INTERNAL = [
    "127.0.0.1",
    "127.1.2.3",
    "localhost",
    "0.0.0.0",  # noqa: S104  (a string, not a bind)
    "10.0.0.5",
    "172.16.0.9",
    "192.168.1.20",
    "169.254.169.254",  # the cloud metadata service
    "100.64.0.1",
    "224.0.0.1",
    "::1",
    "::ffff:127.0.0.1",
    "fe80::1",
    "fc00::5",
]


@pytest.fixture
def no_allowed_networks(settings) -> None:
    settings.PORTAL_DICOM_ALLOWED_NETWORKS = []


@pytest.mark.parametrize("address", [a for a in INTERNAL if a != "localhost"])
def test_internal_addresses_are_outside_the_policy(no_allowed_networks, address):
    assert not egress.address_allowed(address)


def test_public_addresses_and_listed_networks_are_inside(settings):
    settings.PORTAL_DICOM_ALLOWED_NETWORKS = ["192.168.10.0/24", "fd00:10::/32"]
    assert egress.address_allowed("8.8.8.8") and egress.address_allowed("2606:4700::1111")
    assert egress.address_allowed("192.168.10.77") and egress.address_allowed("fd00:10::7")
    assert not egress.address_allowed("192.168.11.77")
    assert egress.address_allowed("::ffff:192.168.10.77")


@pytest.mark.parametrize("host", INTERNAL)
def test_a_node_on_an_internal_address_is_not_listed(
    no_allowed_networks, alpha, alpha_admin_client, host
):
    response = alpha_admin_client.post("/settings/nodes/new/", {**NODE, "host": host})
    assert response.status_code == 200
    [message] = response.context["form"].errors["host"]
    assert message.startswith("The archive does not connect to") and "ALLOWED_NETWORKS" in message
    assert nodes_of(alpha) == [] and changes_of(alpha) == []
    assert audit_of(alpha, "node.create") == []


def test_the_node_form_shows_the_policy_and_the_fields_problems_in_one_round(
    no_allowed_networks, alpha, alpha_admin_client
):
    response = alpha_admin_client.post(
        "/settings/nodes/new/", {**NODE, "host": "127.0.0.1", "port": "99999"}
    )
    errors = response.context["form"].errors
    assert "port" in errors and errors["host"][0].startswith("The archive does not connect to")
    assert nodes_of(alpha) == []


def test_a_node_cannot_be_moved_to_an_internal_address_by_the_api(
    no_allowed_networks, alpha, api_as
):
    node = add_node(alpha, host="8.8.8.8")
    response = api_as(alpha).patch(
        f"/api/v1/nodes/{node.pk}/", {"host": "169.254.169.254"}, content_type="application/json"
    )
    assert response.status_code == 400
    assert "does not connect to 169.254.169.254" in response.json()["host"][0]
    assert nodes_of(alpha)[0].host == "8.8.8.8"


def test_the_listed_network_of_the_hospital_is_allowed(settings, alpha, alpha_admin_client):
    settings.PORTAL_DICOM_ALLOWED_NETWORKS = ["192.168.10.0/24"]
    ok = alpha_admin_client.post("/settings/nodes/new/", {**NODE, "host": "192.168.10.5"})
    assert ok.status_code == 302
    other = alpha_admin_client.post("/settings/nodes/new/", {**NODE, "host": "192.168.11.5"})
    assert "does not connect" in other.context["form"].errors["host"][0]
    assert [node.host for node in nodes_of(alpha)] == ["192.168.10.5"]


def test_echo_to_a_refused_address_connects_nowhere_and_says_one_thing(
    no_allowed_networks, hang_up_listener
):
    """An open port and a closed one answer alike: the button reveals nothing about them."""
    port, accepted = hang_up_listener
    open_port = echo(calling_ae="A", ae_title="B", host="127.0.0.1", port=port, timeout=1)
    closed_port = echo(calling_ae="A", ae_title="B", host="127.0.0.1", port=free_port(), timeout=1)
    assert not open_port.ok and open_port.message == closed_port.message
    assert open_port.message == egress.REFUSED.format(host="127.0.0.1")
    assert accepted == []


def test_a_node_listed_before_the_policy_is_refused_at_connect_time(
    no_allowed_networks, alpha, alpha_admin_client, hang_up_listener
):
    port, accepted = hang_up_listener
    node = add_node(alpha, host="127.0.0.1", port=port)  # saved before the policy existed
    response = alpha_admin_client.post(f"/settings/nodes/{node.pk}/echo/", HTTP_HX_REQUEST="true")
    assert "does not connect to 127.0.0.1" in response.content.decode()
    assert accepted == [] and nodes_of(alpha)[0].last_echo_ok is False


def test_a_name_is_resolved_once_and_the_checked_address_is_called(storescp, monkeypatch):  # noqa: F811
    """DNS rebinding: a name that answers an allowed address, then an internal one, is
    called at the address that was checked."""
    real = socket.getaddrinfo
    answers = iter(["127.0.0.1", "169.254.169.254"])
    asked: list[str] = []

    def rebinding(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host != "rebind.example":
            return real(host, port, *args, **kwargs)
        asked.append(host)
        return real(next(answers), port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    result = echo(calling_ae="A", ae_title="ECHOSCP", host="rebind.example", port=storescp)
    assert result.ok, result.message
    assert asked == ["rebind.example"]


def test_the_test_button_is_rate_limited_per_tenant(
    alpha, beta, alpha_admin_client, make_user, api_as, monkeypatch
):
    monkeypatch.setattr(services, "ECHO_RATE", "2/m")
    monkeypatch.setattr(services, "ECHO_RATE_GROUP", f"node-echo-{uuid.uuid4().hex}")  # own count
    node = add_node(alpha, host="127.0.0.1", port=free_port())
    url = f"/settings/nodes/{node.pk}/echo/"
    for _ in range(2):
        assert "refused" in alpha_admin_client.post(url, HTTP_HX_REQUEST="true").content.decode()
    limited = alpha_admin_client.post(url, HTTP_HX_REQUEST="true").content.decode()
    assert "Too many C-ECHO tests this minute" in limited
    assert len(audit_of(alpha, "node.echo")) == 2  # the third never left the archive
    api = api_as(alpha).post(f"/api/v1/nodes/{node.pk}/echo/")
    assert api.status_code == 429 and int(api["Retry-After"]) >= 1
    # Another tenant's budget is its own.
    beta_node = add_node(beta, host="127.0.0.1", port=free_port())
    beta_client = logged_in(tenant_client(beta), make_user(beta).username)
    answer = beta_client.post(f"/settings/nodes/{beta_node.pk}/echo/", HTTP_HX_REQUEST="true")
    assert "refused" in answer.content.decode() and "Too many" not in answer.content.decode()
