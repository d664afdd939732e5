"""C-STORE data sets received straight into files (dicomnet/receive.py) on a real port.

The gateway runs in threads of this process, so this process's memory is the gateway's;
the tenants are the gateway tests' committed pair (made for this module, purged after it).
"""

import hashlib
import io
import re
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

from dicomnet import receive
from dicomnet.gateway import OUT_OF_RESOURCES, SUCCESS, DicomGateway
from dicomnet.receive import ReceivedFile, ReceivingDIMSE
from tests.conftest import require_tool
from tests.dicomnet import test_gateway
from tests.dicomnet.test_gateway import (
    STORESCU,
    Site,
    _free_port,
    bundled,
    dataset_bytes,
    fresh_copy,
    last_job,
    storescu,
)

pytestmark = pytest.mark.live

committed = test_gateway.committed
sites = test_gateway.sites

MiB = 1 << 20
RECEIVING = re.compile(r"^\.dimse-[0-9a-f]{32}\.tmp$")


@pytest.fixture(scope="module")
def gateway(sites) -> Iterator[tuple[DicomGateway, int]]:
    gateway = DicomGateway(ae_title="RECVGW")
    port = _free_port()
    server = gateway.start("127.0.0.1", port)
    yield gateway, port
    gateway.stop(server, timeout=5)


@pytest.fixture
def received(monkeypatch) -> list[tuple[ReceivedFile | None, bool]]:
    """What the gateway's C-STORE handler got from `received_file`, and whether its file
    existed then."""
    seen: list[tuple[ReceivedFile | None, bool]] = []
    original = receive.received_file

    def spy(event):  # type: ignore[no-untyped-def]
        result = original(event)
        seen.append((result, result is not None and result.path.is_file()))
        return result

    monkeypatch.setattr(receive, "received_file", spy)
    return seen


@pytest.fixture
def receive_into(gateway, tmp_path, monkeypatch) -> Path:
    """The gateway's associations receive into a folder of the test's own."""
    folder = tmp_path / "receiving"
    folder.mkdir()
    monkeypatch.setattr(gateway[0], "receive_directory", lambda assoc: folder)
    return folder


def in_flight(folder: Path) -> list[Path]:
    return [path for path in folder.iterdir() if RECEIVING.match(path.name)]


def staging(site: Site) -> Path:
    return Path(site.tenant.storage_root) / ".staging"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ct_with_pixels(size: int) -> pydicom.Dataset:
    """CT_small as a new instance whose 16-bit pixel data is `size` bytes (1024 columns)."""
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Columns, ds.Rows = 1024, size // 2048
    ds.PixelData = bytes(range(256)) * (size // 256)
    return ds


def associate(port: int, called: str, contexts: list[tuple[str, str]]) -> Association:
    client = AE(ae_title="PYCLIENT")
    for abstract, transfer in contexts:
        client.add_requested_context(abstract, transfer)
    assoc = client.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established
    return assoc


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_stored_file_is_byte_identical_to_what_was_sent(sites, gateway, received, tmp_path) -> None:
    a, _ = sites
    path = tmp_path / "ct.dcm"
    sop = fresh_copy(bundled("CT_small.dcm"), path)
    assert test_gateway.send(gateway[1], a.ae, path) == (SUCCESS, "")

    [stored] = a.instances(sop)
    on_disk = a.file_of(stored).read_bytes()
    assert sha256(dataset_bytes(a.file_of(stored))) == sha256(dataset_bytes(path))
    # Hashed while receiving, into the tenant's staging area, and that is the stored file.
    [(file, existed)] = received
    assert file is not None and existed and not file.error
    assert file.path.parent == staging(a)
    assert RECEIVING.match(file.path.name)
    assert (
        (file.size, file.sha256)
        == (len(on_disk), sha256(on_disk))
        == (
            stored.size_bytes,
            stored.sha256,
        )
    )
    assert not file.path.exists()
    assert in_flight(staging(a)) == []


def test_too_large_object_is_refused_while_arriving_and_the_association_goes_on(
    sites, gateway, received, receive_into, settings, tmp_path
) -> None:
    a, _ = sites
    settings.PORTAL_MAX_INSTANCE_BYTES = MiB
    big = ct_with_pixels(3 * MiB)
    small_path = tmp_path / "small.dcm"
    small_sop = fresh_copy(bundled("CT_small.dcm"), small_path)
    small = pydicom.dcmread(small_path)

    assoc = associate(gateway[1], a.ae, [(str(big.SOPClassUID), ExplicitVRLittleEndian)])
    try:
        refused = assoc.send_c_store(big)
        assert in_flight(receive_into) == []
        accepted = assoc.send_c_store(small)
    finally:
        assoc.release()

    assert refused.Status == OUT_OF_RESOURCES
    assert refused.ErrorComment == f"The object is larger than the limit of {MiB} bytes."
    assert accepted.Status == SUCCESS
    [(too_large, _), (fine, existed)] = received
    assert too_large is not None and too_large.too_large and too_large.sha256 == ""
    assert too_large.size > 3 * MiB  # all of it was read off the wire, none of it kept
    assert too_large.path.parent == receive_into and not too_large.path.exists()
    assert fine is not None and existed and fine.path.parent == receive_into
    assert a.instances(str(big.SOPInstanceUID)) == []
    assert len(a.instances(small_sop)) == 1
    # Refused before any database work: the job holds the one stored instance only.
    job = last_job(a)
    assert (job.total, job.stored, job.rejected) == (1, 1, 0)
    assert wait_for(lambda: list(receive_into.iterdir()) == [])


def test_association_aborted_mid_data_set_leaves_no_file(
    sites, gateway, receive_into, settings
) -> None:
    a, _ = sites
    ds = ct_with_pixels(2 * MiB)
    encoded = encode(ds, False, True)  # Explicit VR Little Endian, as the context below
    request = C_STORE()
    request.MessageID, request.Priority = 1, 2
    request.AffectedSOPClassUID = ds.SOPClassUID
    request.AffectedSOPInstanceUID = ds.SOPInstanceUID
    request.DataSet = io.BytesIO(encoded)
    message = C_STORE_RQ()
    message.primitive_to_message(request)

    assoc = associate(gateway[1], a.ae, [(str(ds.SOPClassUID), ExplicitVRLittleEndian)])
    try:
        context_id = assoc.accepted_contexts[0].context_id
        pdus = message.encode_msg(context_id, int(assoc.acceptor.maximum_length))
        for _ in range(4):  # the command set and the first data set fragments only
            assoc.dul.send_pdu(next(pdus))
        assert wait_for(lambda: len(in_flight(receive_into)) == 1)
    finally:
        assoc.abort()
    assert wait_for(lambda: list(receive_into.iterdir()) == [])
    assert a.instances(str(ds.SOPInstanceUID)) == []


def test_other_associations_of_the_process_keep_pynetdicom_behaviour(sites, gateway) -> None:
    a, _ = sites
    assoc = associate(gateway[1], a.ae, [("1.2.840.10008.1.1", ExplicitVRLittleEndian)])
    try:
        assert assoc.send_c_echo().Status == SUCCESS
        # This requestor's association is pynetdicom's own; the gateway's end is not.
        assert type(assoc.dimse) is DIMSEServiceProvider
        acceptors = [
            thread
            for thread in threading.enumerate()
            if isinstance(thread, Association) and thread.is_acceptor
        ]
        assert acceptors
        assert all(isinstance(acceptor.dimse, ReceivingDIMSE) for acceptor in acceptors)
    finally:
        assoc.release()


def _write_big_file(path: Path, pixel_bytes: int) -> str:
    """A CT whose pixel data (OW, `pixel_bytes` long) is streamed to disk, never in memory."""
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    for tag in [tag for tag in ds.keys() if tag >= 0x7FE00010]:  # noqa: SIM118
        del ds[tag]
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Columns, ds.Rows = 16384, pixel_bytes // (16384 * 2)
    ds.save_as(path, enforce_file_format=True)
    block = bytes(range(256)) * (MiB // 256)
    with path.open("ab") as out:
        out.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixel_bytes))
        for _ in range(pixel_bytes // MiB):
            out.write(block)
    return str(ds.SOPInstanceUID)


def _dataset_sha256(path: Path) -> str:
    """`dataset_bytes(path)`'s SHA-256, read in chunks."""
    meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        stream.seek(144 + int(meta.FileMetaInformationGroupLength))
        while chunk := stream.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def test_memory_stays_flat_whatever_the_object_size(sites, gateway, tmp_path, monkeypatch) -> None:
    """A 256 MiB object, sent by DCMTK's storescu (another process), grows this process
    (the gateway's) by far less than the object."""
    require_tool(STORESCU, "DCMTK")
    a, _ = sites
    size = 256 * MiB
    path = tmp_path / "big.dcm"
    sop = _write_big_file(path, size)

    baseline = _rss_kib("VmRSS")
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], _rss_kib("VmRSS"))

    try:  # resets VmHWM to the current RSS (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
        hwm_reset = True
    except OSError:
        hwm_reset = False
    at_handler: list[int] = []  # the peak when the handler gets the file: receiving alone
    original = receive.received_file

    def spy(event):  # type: ignore[no-untyped-def]
        at_handler.append(max(peak[0], _rss_kib("VmHWM") if hwm_reset else 0))
        return original(event)

    monkeypatch.setattr(receive, "received_file", spy)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = storescu(gateway[1], a.ae, path)
    finally:
        done.set()
        sampler.join()
    if hwm_reset:
        peak[0] = max(peak[0], _rss_kib("VmHWM"))
    growth_mib = (peak[0] - baseline) / 1024
    receiving_mib = (at_handler[0] - baseline) / 1024 if at_handler else float("nan")
    print(
        f"\nRSS growth for {size // MiB} MiB: {receiving_mib:.1f} MiB receiving, "
        f"{growth_mib:.1f} MiB receiving and storing"
    )

    assert result.returncode == 0, result.stdout + result.stderr
    [stored] = a.instances(sop)
    assert _dataset_sha256(a.file_of(stored)) == _dataset_sha256(path)
    assert growth_mib < 100, f"the gateway grew by {growth_mib:.1f} MiB for a 256 MiB object"
    assert in_flight(staging(a)) == []
