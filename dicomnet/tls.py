"""DICOM TLS (PS3.15 B.1, BCP 195): the gateway's second port, and who a peer proved to be.

The platform configures one server certificate and, optionally, the certificate authority
that issues its peers' client certificates; a tenant pins a remote node to the SHA-256 of
the certificate it presents (configuration/selectors.py `node_is_listed`).

pynetdicom's server performs the TLS handshake in its accepting thread without a timeout,
so one peer that connects and stays silent would stop the port for everyone. Here the
accepting thread only wraps the socket; the connection's own thread does the handshake,
with a deadline (`handshake`).
"""

import hashlib
import logging
import socket
import ssl
from pathlib import Path
from typing import Any, cast

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from pynetdicom.association import Association

logger = logging.getLogger(__name__)

# A peer that has not finished its handshake by then is disconnected.
HANDSHAKE_TIMEOUT = 10.0


def server_context(*, port: int) -> ssl.SSLContext | None:
    """The TLS context for the gateway's TLS port `port`, or None when it is 0 (TLS off)."""
    if not port:
        return None
    certificate = str(settings.PORTAL_DICOM_TLS_CERTIFICATE or "")
    key = str(settings.PORTAL_DICOM_TLS_KEY or "")
    client_ca = str(settings.PORTAL_DICOM_TLS_CLIENT_CA or "")
    if not certificate or not key:
        raise ImproperlyConfigured(
            "DICOM TLS is on (a TLS port is set): PORTAL_DICOM_TLS_CERTIFICATE and "
            "PORTAL_DICOM_TLS_KEY must name the gateway's certificate chain and key (PEM)."
        )
    for name, path in (
        ("PORTAL_DICOM_TLS_CERTIFICATE", certificate),
        ("PORTAL_DICOM_TLS_KEY", key),
        ("PORTAL_DICOM_TLS_CLIENT_CA", client_ca),
    ):
        if path and not Path(path).is_file():
            raise ImproperlyConfigured(f"{name}: no such file: {path}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # BCP 195 (PS3.15 B.9): TLS 1.2 or newer.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certificate, key)
        if client_ca:
            context.load_verify_locations(cafile=client_ca)
    except (ssl.SSLError, OSError) as error:
        raise ImproperlyConfigured(f"DICOM TLS certificate or key unusable: {error}") from error
    # A client certificate is asked for when a CA can check it; a peer without one still
    # connects, and is recognised only as nodes that are not pinned to a certificate.
    context.verify_mode = ssl.CERT_OPTIONAL if client_ca else ssl.CERT_NONE
    return context


class DeferredHandshakeMixin:
    """Accept TLS connections without shaking hands in the accepting thread."""

    def get_request(self) -> tuple[socket.socket, Any]:
        listening = cast(socket.socket, getattr(self, "socket"))  # noqa: B009 - a mixin
        context = cast(ssl.SSLContext | None, getattr(self, "ssl_context", None))
        client, address = listening.accept()
        if context is not None:
            client = context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address


def handshake(connection: socket.socket, *, timeout: float = HANDSHAKE_TIMEOUT) -> bool:
    """Finish a deferred TLS handshake within `timeout`; False (and closed) if it failed.
    A plain socket needs none."""
    if not isinstance(connection, ssl.SSLSocket):
        return True
    try:
        connection.settimeout(timeout)
        connection.do_handshake()
        connection.settimeout(None)
    except (ssl.SSLError, OSError) as error:
        peer = _peer_name(connection)
        logger.warning("DICOM TLS handshake failed with %s: %s", peer, error)
        connection.close()
        return False
    return True


def peer_certificate_sha256(assoc: Association) -> str:
    """The SHA-256 (hex) of the client certificate `assoc`'s peer presented, or ''."""
    dul_socket = getattr(getattr(assoc, "dul", None), "socket", None)
    connection = getattr(dul_socket, "socket", None)
    if not isinstance(connection, ssl.SSLSocket):
        return ""
    try:
        der = cast(bytes | None, connection.getpeercert(binary_form=True))
    except (ValueError, OSError):
        return ""
    return hashlib.sha256(der).hexdigest() if der else ""


def _peer_name(connection: socket.socket) -> str:
    try:
        host, port = connection.getpeername()[:2]
    except OSError:
        return "a peer that left"
    return f"{host}:{port}"
