"""C-ECHO ("DICOM ping") of a remote node with pynetdicom; no database, plain results.

Only addresses the egress policy allows are connected to (configuration/egress.py)."""

import socket
import time
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from configuration import egress

DEFAULT_CALLING_AE = "PACSPORTAL"


@dataclass(frozen=True)
class EchoResult:
    ok: bool
    message: str
    rtt_ms: float | None = None


def echo(*, calling_ae: str, ae_title: str, host: str, port: int, timeout: float = 5) -> EchoResult:
    """Associate with `ae_title` at host:port, send one C-ECHO, release; say what went wrong."""
    where = f"{host}:{port}"
    calling_ae = calling_ae or DEFAULT_CALLING_AE
    try:
        address = egress.resolve(host, port)
    except egress.AddressRefused as refusal:
        return EchoResult(False, str(refusal))
    except (OSError, UnicodeError):
        return EchoResult(False, f"The host name {host} could not be resolved (DNS).")

    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    connected: list[bool] = []
    handlers: list[Any] = [(evt.EVT_CONN_OPEN, lambda event: connected.append(True))]
    started = time.monotonic()
    assoc = ae.associate(address, port, ae_title=ae_title, evt_handlers=handlers)
    try:
        if assoc.is_established:
            return _send_echo(assoc, ae_title, where)
        if not connected:
            return EchoResult(False, _connection_failure(address, port, where, timeout))
        if assoc.is_rejected:
            answer = assoc.acceptor.primitive
            reason = str(getattr(answer, "reason_str", "") or "No reason given").rstrip(".")
            return EchoResult(
                False,
                f"{ae_title} at {where} rejected the association ({reason[:1].lower()}"
                f"{reason[1:]}). Check that the node lists this archive's AE title "
                f"{calling_ae} and that the called AE title is right.",
            )
        answer = assoc.acceptor.primitive
        if answer is not None and getattr(answer, "result", None) == 0x00:
            return EchoResult(
                False, f"{ae_title} at {where} accepted the association but not Verification."
            )
        if time.monotonic() - started >= timeout:
            return EchoResult(False, f"No DICOM answer from {where} within {timeout:g} s.")
        return EchoResult(
            False,
            f"{where} closed the connection without a DICOM answer: is this the port of a "
            "DICOM service?",
        )
    finally:
        ae.shutdown()


def _send_echo(assoc: Any, ae_title: str, where: str) -> EchoResult:
    sent = time.monotonic()
    status = assoc.send_c_echo()
    rtt_ms = round((time.monotonic() - sent) * 1000, 1)
    if assoc.is_established:
        assoc.release()
    if not status or "Status" not in status:
        return EchoResult(False, f"{ae_title} at {where} did not answer the C-ECHO in time.")
    if status.Status != 0x0000:
        return EchoResult(
            False, f"{ae_title} at {where} answered the C-ECHO with status 0x{status.Status:04X}."
        )
    return EchoResult(True, f"{ae_title} at {where} answered the C-ECHO.", rtt_ms)


def _connection_failure(address: str, port: int, where: str, timeout: float) -> str:
    """Why pynetdicom could not connect; it only logs the reason, so ask the socket again."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            pass
    except ConnectionRefusedError:
        return f"Connection to {where} refused: nothing listens on that port."
    except TimeoutError:
        return f"Connection to {where} timed out after {timeout:g} s (firewall or host down?)."
    except OSError as exc:
        return f"Could not connect to {where}: {exc.strerror or exc}."
    return f"Could not connect to {where}."
