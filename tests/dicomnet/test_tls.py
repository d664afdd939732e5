"""DICOM TLS: the gateway's second port, client certificates pinned per remote node.

A throw-away certificate authority (trustme) issues the gateway's certificate and the
modalities'; peers are pynetdicom and DCMTK's echoscu/storescu with `+tls`.
"""

import hashlib
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django_tenants.utils import schema_context
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from configuration.models import SINGLETON_ID, RemoteNode, TenantSettings
from dicomnet import tls
from dicomnet.gateway import SUCCESS, DicomGateway
from tests.dicomnet.test_gateway import ECHOSCU, MODALITY, STORESCU, Site, _free_port, run

pytestmark = pytest.mark.live


@dataclass(frozen=True)
class Peer:
    """A client certificate and key, as PEM files, and the certificate's SHA-256."""

    certificate: Path
    key: Path
    sha256: str


@dataclass(frozen=True)
class Pki:
    ca: Path
    modality: Peer  # pinned on tenant a's node
    colleague: Peer  # same CA, another device
    rogue: Peer  # a CA the gateway does not trust


def _peer(ca: trustme.CA, name: str, directory: Path) -> Peer:
    issued = ca.issue_cert(f"{name}.radiology.example")
    certificate, key = directory / f"{name}.pem", directory / f"{name}.key"
    issued.cert_chain_pems[0].write_to_path(str(certificate))
    issued.private_key_pem.write_to_path(str(key))
    der = ssl.PEM_cert_to_DER_cert(issued.cert_chain_pems[0].bytes().decode())
    return Peer(certificate, key, hashlib.sha256(der).hexdigest())


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Iterator[tuple[Pki, Path, Path]]:
    directory = tmp_path_factory.mktemp("pki")
    ca, rogue_ca = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.private_key_and_cert_chain_pem.write_to_path(str(directory / "gateway.pem"))
    made = Pki(
        ca=directory / "ca.pem",
        modality=_peer(ca, "modality", directory),
        colleague=_peer(ca, "colleague", directory),
        rogue=_peer(rogue_ca, "rogue", directory),
    )
    yield made, directory / "gateway.pem", directory / "gateway.pem"


@pytest.fixture(scope="module")
def ports(sites, pki) -> Iterator[tuple[int, int]]:
    """The gateway with a plain port and a TLS port; tenant a requires known nodes and
    lists MODALITY at 127.0.0.1 pinned to the modality's certificate."""
    made, certificate, key = pki
    a, _ = sites
    with override_settings(
        PORTAL_DICOM_TLS_CERTIFICATE=str(certificate),
        PORTAL_DICOM_TLS_KEY=str(key),
        PORTAL_DICOM_TLS_CLIENT_CA=str(made.ca),
    ):
        context = tls.server_context(port=1)
    with schema_context(a.tenant.schema_name):
        TenantSettings.objects.get_or_create(pk=SINGLETON_ID)
        TenantSettings.objects.filter(pk=SINGLETON_ID).update(require_known_nodes=True)
        RemoteNode.objects.create(
            ae_title=MODALITY,
            host="127.0.0.1",
            port=104,
            tls_certificate_sha256=made.modality.sha256,
        )
    gateway = DicomGateway(ae_title="TLSGW")
    plain_port, tls_port = _free_port(), _free_port()
    servers = [
        gateway.start("127.0.0.1", plain_port),
        gateway.start("127.0.0.1", tls_port, ssl_context=context),
    ]
    yield plain_port, tls_port
    gateway.stop(*servers, timeout=5)


def client_context(ca: Path, peer: Peer | None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    if peer is not None:
        context.load_cert_chain(str(peer.certificate), str(peer.key))
    return context


def echo(port: int, site: Site, *, tls_with: ssl.SSLContext | None = None) -> int | None:
    """C-ECHO from MODALITY: the status, or None if no association was established."""
    client = AE(ae_title=MODALITY)
    client.add_requested_context(Verification)
    client.acse_timeout = client.network_timeout = 10
    tls_args = (tls_with, "127.0.0.1") if tls_with is not None else None
    assoc = client.associate("127.0.0.1", port, ae_title=site.ae, tls_args=tls_args)
    if not assoc.is_established:
        return None
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


def test_a_pinned_node_is_recognised_only_over_tls_with_its_certificate(ports, pki, sites) -> None:
    plain_port, tls_port = ports
    made, _, _ = pki
    a, _ = sites
    assert echo(tls_port, a, tls_with=client_context(made.ca, made.modality)) == SUCCESS
    # The same title from the same address, but not proven by the pinned certificate.
    assert echo(plain_port, a) is None
    assert echo(tls_port, a, tls_with=client_context(made.ca, None)) is None
    assert echo(tls_port, a, tls_with=client_context(made.ca, made.colleague)) is None


def test_a_certificate_from_an_untrusted_authority_fails_the_handshake(ports, pki, sites) -> None:
    _, tls_port = ports
    made, _, _ = pki
    a, _ = sites
    with socket.create_connection(("127.0.0.1", tls_port), timeout=10) as raw:
        context = client_context(made.ca, made.rogue)
        with (
            pytest.raises((ssl.SSLError, ConnectionError)),
            context.wrap_socket(raw, server_hostname="127.0.0.1") as wrapped,
        ):
            # TLS 1.3 reports the refused client certificate on the first read.
            wrapped.sendall(b"\x00")
            wrapped.recv(1)
    assert echo(tls_port, a, tls_with=client_context(made.ca, made.rogue)) is None


def test_tls_protects_other_tenants_unpinned_nodes_too(ports, pki, sites) -> None:
    """Tenant b requires nothing: over TLS, with or without a certificate, it answers as on
    the plain port; the certificate pinned in tenant a grants nothing in b."""
    plain_port, tls_port = ports
    made, _, _ = pki
    _, b = sites
    assert echo(plain_port, b) == SUCCESS
    assert echo(tls_port, b, tls_with=client_context(made.ca, None)) == SUCCESS
    with schema_context(b.tenant.schema_name):
        TenantSettings.objects.get_or_create(pk=SINGLETON_ID)
        TenantSettings.objects.filter(pk=SINGLETON_ID).update(require_known_nodes=True)
    try:
        assert echo(tls_port, b, tls_with=client_context(made.ca, made.modality)) is None
    finally:
        with schema_context(b.tenant.schema_name):
            TenantSettings.objects.filter(pk=SINGLETON_ID).update(require_known_nodes=False)


def test_a_silent_connection_does_not_block_the_tls_port(ports, pki, sites) -> None:
    """pynetdicom shakes hands in the accepting thread; ours in the connection's own."""
    _, tls_port = ports
    made, _, _ = pki
    a, _ = sites
    silent = [socket.create_connection(("127.0.0.1", tls_port)) for _ in range(3)]
    try:
        started = time.monotonic()
        assert echo(tls_port, a, tls_with=client_context(made.ca, made.modality)) == SUCCESS
        assert time.monotonic() - started < 5
    finally:
        for connection in silent:
            connection.close()


def test_dcmtk_stores_over_tls_with_the_pinned_certificate(dcmtk, ports, pki, sites, ct) -> None:
    _, tls_port = ports
    made, _, _ = pki
    a, b = sites
    path, sop = ct
    options = ("+tls", str(made.modality.key), str(made.modality.certificate), "+cf", str(made.ca))
    echoed = run(ECHOSCU, *options, "-aet", MODALITY, "-aec", a.ae, "127.0.0.1", str(tls_port))
    assert echoed.returncode == 0, echoed.stdout + echoed.stderr
    stored = run(
        STORESCU,
        *options,
        "-aet",
        MODALITY,
        "-aec",
        a.ae,
        "127.0.0.1",
        str(tls_port),
        str(path),
    )
    assert stored.returncode == 0, stored.stdout + stored.stderr
    assert len(a.instances(sop)) == 1
    assert b.instances(sop) == []
    # Another device's certificate is not the pinned one: rejected like an unknown title.
    colleague = (
        "+tls",
        str(made.colleague.key),
        str(made.colleague.certificate),
        "+cf",
        str(made.ca),
    )
    refused = run(ECHOSCU, *colleague, "-aet", MODALITY, "-aec", a.ae, "127.0.0.1", str(tls_port))
    assert refused.returncode != 0
    assert "Called AE Title Not Recognized" in refused.stdout + refused.stderr


def test_the_tls_port_needs_a_certificate_and_key(committed, tmp_path) -> None:
    with (
        override_settings(PORTAL_DICOM_TLS_CERTIFICATE="", PORTAL_DICOM_TLS_KEY=""),
        pytest.raises(CommandError, match="PORTAL_DICOM_TLS_CERTIFICATE"),
    ):
        call_command("dicom_gateway", "--tls-port", str(_free_port()))
    missing = str(tmp_path / "absent.pem")
    with (
        override_settings(PORTAL_DICOM_TLS_CERTIFICATE=missing, PORTAL_DICOM_TLS_KEY=missing),
        pytest.raises(CommandError, match="no such file"),
    ):
        call_command("dicom_gateway", "--tls-port", str(_free_port()))
    with pytest.raises(CommandError, match="--tls-port"):
        call_command("dicom_gateway", "--port", "11999", "--tls-port", "11999")
