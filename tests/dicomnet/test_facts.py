"""The dashboard and settings page tell a modality engineer how to connect: the tenant's own
AE title, the published host and ports, the services and syntaxes the gateway accepts, who may
connect, and DCMTK command lines that work as they are (one is run against a live gateway)."""

import shlex
import subprocess

import pytest
from django_tenants.utils import schema_context

from accounts.models import Role
from configuration.services import settings_update
from dicomnet.facts import connection_facts
from tests.conftest import logged_in, require_tool, tenant_client


def page(tenant, make_user, path="/", role=Role.ADMIN) -> str:
    user = make_user(tenant, role=role)
    return logged_in(tenant_client(tenant), user.username).get(path).content.decode()


@pytest.mark.parametrize("path", ["/", "/settings/"])
def test_connection_facts_are_the_tenants_own(alpha, beta, make_user, settings, path):
    settings.PORTAL_DICOM_PUBLIC_HOST = "pacs.hospital.example"
    settings.PORTAL_DICOM_PORT, settings.PORTAL_DICOM_TLS_PORT = 11112, 2762
    text = page(alpha, make_user, path)
    assert "Connect a modality (DICOM)" in text
    assert "<code>ALPHA</code>" in text and "<code>pacs.hospital.example</code>" in text
    assert "echoscu -v -aet MYMODALITY -aec ALPHA pacs.hospital.example 11112" in text
    assert "DICOM TLS <code>2762</code>" in text and "+tls modality.key" in text
    assert "Study Root FIND" in text and "JPEG Baseline" in text
    assert "-aec BETA" not in text and "-aec BETA" in page(beta, make_user, path)


def test_who_may_connect_follows_the_node_policy(alpha, alpha_admin, make_user):
    with schema_context(alpha.schema_name):
        assert "any node that calls" in connection_facts(alpha).who_may_store
        settings_update(
            tenant=alpha,
            actor=alpha_admin,
            require_known_nodes=True,
            query_retrieve_from_any_node=True,
        )
        facts = connection_facts(alpha)
    assert facts.who_may_store.startswith("only the remote nodes listed")
    assert facts.who_may_query == "any node"
    assert "only the remote nodes listed in Settings" in page(alpha, make_user)


def test_the_tiles_link_to_what_they_count_for_those_who_may_go_there(alpha, make_user):
    admin = page(alpha, make_user, role=Role.ADMIN)
    assert 'class="tile" href="/users/"' in admin and 'href="/studies/"' in admin
    assert 'href="/jobs/?kind=periodic&amp;status=failed"' in admin
    viewer = page(alpha, make_user, role=Role.VIEWER)
    assert 'href="/users/"' not in viewer and 'class="tile" href="/studies/"' in viewer


def test_the_echo_line_works_against_the_gateway(alpha, settings):
    """The command shown, run as it is (host and port of a gateway started for the test)."""
    require_tool("echoscu", "DCMTK's echoscu")
    from dicomnet.gateway import DicomGateway

    settings.PORTAL_DICOM_PUBLIC_HOST = "127.0.0.1"
    gateway = DicomGateway()
    server = gateway.start("127.0.0.1", 0)
    try:
        settings.PORTAL_DICOM_PORT = server.server_address[1]
        with schema_context(alpha.schema_name):
            (_, line), *_ = connection_facts(alpha).commands
        done = subprocess.run(shlex.split(line), capture_output=True, text=True, timeout=30)
    finally:
        gateway.stop(server, timeout=5.0)
    assert done.returncode == 0, done.stderr
    assert "Received Echo Response (Success)" in done.stderr + done.stdout
