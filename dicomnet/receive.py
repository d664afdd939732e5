"""C-STORE data sets received straight into files, on the gateway's associations only.

pynetdicom gathers a C-STORE data set in memory (a BytesIO) before the handler runs; its
`STORE_RECV_CHUNKED_DATASET` writes to the global temp dir instead, with no size limit, and
switches every association of the process. `install(assoc, ...)` gives one association a
DIMSE provider that, as soon as a C-STORE-RQ's command set is decoded, opens a new file in
the directory `directory(assoc)` names and writes the Part 10 file there as the fragments
arrive: preamble, "DICM", the file meta pynetdicom builds (the command's Affected SOP Class
and Instance UIDs, the accepted transfer syntax), then the data set. Bytes are counted and
hashed as they are written; past `max_bytes()` the file is removed and the rest of the data
set is read and dropped, so memory stays flat and nothing beyond the limit lands on disk.

The C-STORE handler gets the outcome with `received_file(event)`; it owns the file (moves
it). Whatever it leaves is removed once the request is served, and what an association
ends with (aborted mid-message, never served) when it ends. Other associations of the
process (SCU ones, C-MOVE sub-associations) keep pynetdicom's default behaviour.
"""

import contextlib
import hashlib
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dsutils import create_file_meta, encode_file_meta
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import P_DATA

logger = logging.getLogger(__name__)

_COMMAND_LAST_FRAGMENT = 0b11  # message control header: command information, last fragment


@dataclass(frozen=True)
class ReceivedFile:
    """One received C-STORE data set as a Part 10 file.

    `size` and `sha256` are the whole file's (preamble and file meta included), as written.
    With `error` set (`too_large` for the size limit) there is no file (`path` names none),
    `size` counts what arrived and `sha256` is empty.
    """

    path: Path
    size: int
    sha256: str
    too_large: bool = False
    error: str = ""


class _IncomingFile:
    """A data set being written; it stands where pynetdicom keeps its chunked-receive
    NamedTemporaryFile (`write`, `file.flush()`, `close()`, `name`), so pynetdicom's own
    C-STORE SCP closes it and removes `name` after the handler."""

    def __init__(self, path: Path | None, limit: int, error: str = "") -> None:
        self.path = path
        self.name = str(path) if path is not None else ""  # "": unlink fails harmlessly
        self._limit = limit
        self._size = 0
        self._digest = hashlib.sha256()
        self._error = error
        self._too_large = False
        self._out: IO[bytes] | None = None
        self._result: ReceivedFile | None = None
        self._lock = threading.Lock()  # the DUL thread writes, the association's thread ends
        if path is not None and not error:
            try:
                self._out = path.open("xb")
            except OSError as failure:
                self._error = f"The object could not be written: {failure.strerror or failure}."

    @property
    def file(self) -> "_IncomingFile":
        return self  # pynetdicom flushes `file` after each fragment

    def flush(self) -> None:
        """Nothing: the bytes reach the OS when the file is closed."""

    def write(self, data: bytes) -> int:
        with self._lock:
            self._size += len(data)
            if self._out is None:
                return len(data)  # refused, failed or ended: the rest is dropped
            if self._size > self._limit:
                self._too_large = True
                self._error = f"The object is larger than the limit of {self._limit} bytes."
                self._drop()
                return len(data)
            try:
                self._out.write(data)
            except OSError as failure:
                self._error = f"The object could not be written: {failure.strerror or failure}."
                self._drop()
                return len(data)
            self._digest.update(data)
            return len(data)

    def result(self) -> ReceivedFile:
        """The file, closed; call once the message is complete."""
        with self._lock:
            if self._result is None:
                if self._out is not None:
                    try:
                        self._out.close()
                    except OSError as failure:
                        self._error = (
                            f"The object could not be written: {failure.strerror or failure}."
                        )
                        self._drop()
                    self._out = None
                self._result = ReceivedFile(
                    path=self.path or Path(),
                    size=self._size,
                    sha256="" if self._error else self._digest.hexdigest(),
                    too_large=self._too_large,
                    error=self._error,
                )
            return self._result

    def close(self) -> None:
        self.result()

    def discard(self) -> None:
        """Close and remove the file if it is still there; later writes are dropped."""
        self.result()
        if self.path is not None:
            try:
                self.path.unlink(missing_ok=True)
            except OSError:
                logger.warning("could not remove the received file %s", self.path)

    def _drop(self) -> None:
        out, self._out = self._out, None
        with contextlib.suppress(OSError):
            if out is not None:
                out.close()
        with contextlib.suppress(OSError):
            if self.path is not None:
                self.path.unlink(missing_ok=True)


class ReceivingDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider, writing C-STORE-RQ data sets into files."""

    def __init__(
        self,
        assoc: Association,
        *,
        directory: Callable[[Association], Path | None],
        max_bytes: Callable[[], int],
    ) -> None:
        super().__init__(assoc)
        self._directory = directory
        self._max_bytes = max_bytes
        self._incoming: set[_IncomingFile] = set()
        self._lock = threading.Lock()
        self._ended = False

    def receive_primitive(self, primitive: P_DATA) -> None:
        # One PDV at a time, so that the file is in place before the first data set
        # fragment, even one in the P-DATA that ends the command set. (pynetdicom also
        # drops PDVs that follow a message's last fragment in the same P-DATA; not here.)
        for context_id, data in primitive.presentation_data_value_list:
            single = P_DATA()
            single.presentation_data_value_list.append((context_id, data))
            super().receive_primitive(single)
            message = self.message
            if (
                isinstance(message, C_STORE_RQ)
                and data[:1]
                and data[0] & _COMMAND_LAST_FRAGMENT == _COMMAND_LAST_FRAGMENT
            ):
                self._receive_into_file(message, context_id)

    def _receive_into_file(self, message: Any, context_id: int) -> None:
        earlier = message._data_set_file  # pynetdicom's if STORE_RECV_CHUNKED_DATASET is on
        if isinstance(earlier, _IncomingFile):
            self.discard(earlier)  # a second "last" command fragment
        elif earlier is not None:
            with contextlib.suppress(OSError):
                earlier.close()
                Path(earlier.name).unlink(missing_ok=True)
        incoming = self._open(message, context_id)
        with self._lock:
            ended = self._ended
            if not ended:
                self._incoming.add(incoming)
        if ended:
            incoming.discard()
        message._data_set_file = incoming
        message._data_set_path = incoming.path

    def _open(self, message: Any, context_id: int) -> _IncomingFile:
        limit = 0
        try:
            limit = self._max_bytes()
            directory = None if self._ended else self._directory(self.assoc)
            if directory is None:
                return _IncomingFile(None, limit, "The archive cannot receive the object now.")
            command = message.command_set
            syntax = self.assoc._accepted_cx[context_id].transfer_syntax[0]
            header = b"\x00" * 128 + b"DICM" + _file_meta(command, syntax)
            # A fresh random name (never the sender's UIDs); a dot name with .tmp is skipped
            # by backups and storage checks while it is in flight.
            incoming = _IncomingFile(Path(directory) / f".dimse-{secrets.token_hex(16)}.tmp", limit)
        except Exception as failure:
            logger.warning("C-STORE data set cannot be received into a file: %s", failure)
            return _IncomingFile(None, limit, "The archive could not receive the object.")
        incoming.write(header)
        return incoming

    def discard(self, incoming: object) -> None:
        """Remove a served request's file if the handler left it."""
        if isinstance(incoming, _IncomingFile):
            with self._lock:
                self._incoming.discard(incoming)
            incoming.discard()

    def end(self) -> None:
        """The association is over: remove every file not served, refuse new ones."""
        with self._lock:
            self._ended = True
            left, self._incoming = self._incoming, set()
        for incoming in left:
            incoming.discard()


def _file_meta(command: Any, transfer_syntax: UID) -> bytes:
    """The file meta of a received data set, from its command. One whose command names
    no SOP instance or class (to be refused for it) gets them empty, not invented."""
    meta = create_file_meta(
        sop_class_uid=command.get("AffectedSOPClassUID", ""),
        sop_instance_uid=command.get("AffectedSOPInstanceUID", ""),
        transfer_syntax=transfer_syntax,
    )
    if meta.MediaStorageSOPClassUID and meta.MediaStorageSOPInstanceUID:
        return encode_file_meta(meta)
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_file_meta_info(buffer, meta, enforce_standard=False)
    return buffer.getvalue()


def install(
    assoc: Association,
    *,
    directory: Callable[[Association], Path | None],
    max_bytes: Callable[[], int],
) -> None:
    """Receive `assoc`'s C-STORE data sets into files; before the association starts.

    `directory(assoc)` is asked, in the association's network (DUL) thread, once per data
    set: where to write it (None: refuse it). `max_bytes()` is the size limit of the file.
    """
    dimse = ReceivingDIMSE(assoc, directory=directory, max_bytes=max_bytes)
    assoc.dimse = dimse
    serve, run = assoc._serve_request, assoc.run

    def serve_request(msg: Any, context_id: int) -> None:
        try:
            serve(msg, context_id)
        finally:
            dimse.discard(getattr(msg, "_dataset_file", None))

    def run_association() -> None:
        try:
            run()
        finally:
            dimse.end()

    assoc._serve_request = serve_request  # type: ignore[method-assign]
    assoc.run = run_association  # type: ignore[method-assign]


def received_file(event: Event) -> ReceivedFile | None:
    """The file an EVT_C_STORE's data set was received into; None on an association
    without `install` (the data set is then in `event.request.DataSet`)."""
    incoming = getattr(event.request, "_dataset_file", None)
    if not isinstance(incoming, _IncomingFile):
        return None
    return cast(_IncomingFile, incoming).result()
