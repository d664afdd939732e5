"""The DICOM gateway on a real port: DCMTK and pynetdicom peers against two committed tenants.

The gateway runs in threads of this process with their own database connections, so what
these tests set up must be committed and what the gateway stores is committed too: the
tenants are made for this module and purged after it.
"""

import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pydicom.filereader
import pytest
from django.conf import settings as django_settings
from django.core.management import get_commands, load_command_class
from django.db import connection
from django_tenants.utils import schema_context
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.uid import JPEG2000, CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from configuration.models import SINGLETON_ID, RemoteNode, TenantSettings
from dicomnet import gateway as gateway_module
from dicomnet.gateway import (
    CANNOT_UNDERSTAND,
    OUT_OF_RESOURCES,
    SUCCESS,
    DicomGateway,
    store_status,
)
from studies.ingest.outcomes import StoreStatus
from studies.models import IngestItem, IngestJob, IngestJobStatus, Instance, ItemOutcome
from studies.storage import instance_path
from tenants.models import Tenant
from tenants.services import (
    tenant_create,
    tenant_delete,
    tenant_purge,
    tenant_resume,
    tenant_suspend,
)
from tests.conftest import autocommitting, require_tool
from tests.studies.hostile import STORED, corpus
from tests.studies.ingest.test_upload_worker import PROJECT_ROOT, _test_database_url
from tests.studies.test_dicom_parsing import deflated_file

pytestmark = pytest.mark.live

STORESCU, ECHOSCU = "/usr/bin/storescu", "/usr/bin/echoscu"
MODALITY = "MODALITY1"
TRAILING_PADDING = 0xFFFCFFFC


@dataclass(frozen=True)
class Site:
    tenant: Tenant

    @property
    def ae(self) -> str:
        return str(self.tenant.ae_title)

    def instances(self, sop_instance_uid: str) -> list[Instance]:
        with schema_context(self.tenant.schema_name):
            return list(
                Instance.objects.select_related("medium").filter(sop_instance_uid=sop_instance_uid)
            )

    def file_of(self, instance: Instance) -> Path:
        with schema_context(self.tenant.schema_name):
            return instance_path(instance)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bundled(name: str) -> Path:
    return Path(get_testdata_file(name, download=False))


def dataset_bytes(path: Path) -> bytes:
    """The encoded dataset after the file meta: what the sender's modality encoded.

    A DIMSE receiver writes its own file meta (its implementation UID, the sender's AE), so
    only the part after the meta can be, and must be, byte-identical to the sent file's.
    """
    data = path.read_bytes()
    meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
    # Preamble and "DICM" (132 bytes), the group length element (12), then the group.
    return data[144 + int(meta.FileMetaInformationGroupLength) :]


def fresh_copy(source: Path, target: Path) -> str:
    """`source` with new study, series and instance UIDs; returns the instance UID.

    Dataset trailing padding (FFFC,FFFC) is dropped: DCMTK never puts it on the wire, and
    with it gone storescu sends the file's dataset byte for byte.
    """
    ds = pydicom.dcmread(source)
    if TRAILING_PADDING in ds:
        del ds[TRAILING_PADDING]
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(target, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def recorded_item(site: Site, sop_instance_uid: str) -> IngestItem:
    """The item a C-STORE of `sop_instance_uid` left, once it is no longer pending."""
    deadline = time.monotonic() + 10
    with schema_context(site.tenant.schema_name):
        while True:
            item = IngestItem.objects.filter(name=f"{sop_instance_uid}.dcm").first()
            if item is not None and item.outcome != ItemOutcome.PENDING:
                return item
            assert time.monotonic() < deadline, f"no item for {sop_instance_uid}"
            time.sleep(0.05)


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def storescu(port: int, called: str, path: Path, calling: str = MODALITY, *options: str):
    return run(
        STORESCU, *options, "-aet", calling, "-aec", called, "127.0.0.1", str(port), str(path)
    )


def echoscu(port: int, called: str, calling: str = MODALITY):
    return run(ECHOSCU, "-aet", calling, "-aec", called, "127.0.0.1", str(port))


def last_job(site: Site) -> IngestJob:
    """The newest DIMSE job, once the gateway has closed it (after the association ended)."""
    deadline = time.monotonic() + 10
    with schema_context(site.tenant.schema_name):
        while True:
            job = IngestJob.objects.filter(source="dimse").order_by("-pk").first()
            closed = {IngestJobStatus.DONE, IngestJobStatus.FAILED}
            if (job is not None and job.status in closed) or time.monotonic() > deadline:
                assert job is not None
                return job
            time.sleep(0.05)


@pytest.fixture(scope="module")
def committed(django_db_setup, django_db_blocker) -> Iterator[None]:
    """Autocommit database access for the module: the gateway's threads read what we write."""
    with autocommitting(django_db_blocker):
        yield


@pytest.fixture(scope="module")
def sites(committed) -> Iterator[tuple[Site, Site]]:
    """Two committed tenants with their own AE titles; deleted and purged afterwards."""
    tag = uuid.uuid4().hex[:6]
    made = [
        tenant_create(
            slug=f"dimse-{tag}-{letter}",
            name=f"DIMSE {letter}",
            admin_email="admin@example.org",
            ae_title=f"GW{letter.upper()}{tag.upper()}",
            created_by="tests",
        ).tenant
        for letter in ("a", "b")
    ]
    try:
        yield Site(made[0]), Site(made[1])
    finally:
        connection.set_schema_to_public()
        for tenant in Tenant.objects.filter(pk__in=[t.pk for t in made]):
            if tenant.status == "suspended":
                tenant = tenant_resume(tenant=tenant, actor="tests")
            tenant = tenant_delete(tenant=tenant, actor="tests", confirm_slug=tenant.slug)
            tenant_purge(tenant=tenant)


@pytest.fixture(scope="module")
def gateway_port(sites) -> Iterator[int]:
    gateway = DicomGateway(ae_title="TESTGW")
    port = _free_port()
    server = gateway.start("127.0.0.1", port)
    yield port
    gateway.stop(server, timeout=5)


@pytest.fixture
def dcmtk() -> None:
    require_tool(STORESCU, "DCMTK")


@pytest.fixture
def ct(tmp_path: Path) -> tuple[Path, str]:
    """CT_small.dcm as a new instance, so each test stores something no other test did."""
    path = tmp_path / "ct.dcm"
    return path, fresh_copy(bundled("CT_small.dcm"), path)


def test_store_status_maps_outcomes_to_dimse_statuses() -> None:
    assert store_status(outcome=ItemOutcome.STORED) == SUCCESS
    assert store_status(outcome=ItemOutcome.REPLACED) == SUCCESS
    assert store_status(outcome=ItemOutcome.DUPLICATE) == SUCCESS
    assert store_status(outcome=ItemOutcome.REJECTED, reason_code="quota") == OUT_OF_RESOURCES
    assert store_status(outcome=ItemOutcome.REJECTED, reason_code="no-medium") == 0xA700
    # A Type 1 attribute missing: the data set does not match its SOP class (as STOW-RS says).
    assert store_status(outcome=ItemOutcome.REJECTED, reason_code="missing-uid") == 0xA900
    assert store_status(outcome=ItemOutcome.REJECTED, reason_code="not-dicom") == 0xC000
    assert CANNOT_UNDERSTAND & 0xF000 == 0xC000
    # Not a plain success: another object is stored under this UID, the first copy is kept.
    differs = store_status(outcome=ItemOutcome.REJECTED, reason_code="duplicate-differs")
    assert differs == 0x0111
    conflict = store_status(outcome=ItemOutcome.REJECTED, reason_code="identity-conflict")
    assert conflict & 0xF000 == 0xC000


def test_echoscu_is_answered(dcmtk, sites, gateway_port) -> None:
    result = echoscu(gateway_port, sites[0].ae)
    assert result.returncode == 0, result.stdout + result.stderr


def test_storescu_stores_in_the_called_tenant_only(dcmtk, sites, gateway_port, ct) -> None:
    a, b = sites
    path, sop = ct
    result = storescu(gateway_port, a.ae, path)
    assert result.returncode == 0, result.stdout + result.stderr

    [stored] = a.instances(sop)
    assert b.instances(sop) == []
    on_disk = a.file_of(stored)
    assert on_disk.is_relative_to(a.tenant.storage_root)
    # storescu sent Explicit VR Little Endian as the file has it: the dataset is unchanged.
    assert dataset_bytes(on_disk) == dataset_bytes(path)
    assert stored.sha256 == hashlib.sha256(on_disk.read_bytes()).hexdigest()
    assert stored.transfer_syntax_uid == ExplicitVRLittleEndian
    job = last_job(a)
    assert (job.status, job.total, job.stored, job.rejected) == ("done", 1, 1, 0)
    assert job.description == f"from {MODALITY}@127.0.0.1"


def test_same_instance_to_two_tenants_is_stored_once_in_each(
    dcmtk, sites, gateway_port, ct
) -> None:
    a, b = sites
    path, sop = ct
    assert storescu(gateway_port, b.ae, path).returncode == 0
    assert a.instances(sop) == []
    [in_b] = b.instances(sop)

    assert storescu(gateway_port, a.ae, path).returncode == 0
    [in_a] = a.instances(sop)
    [still_b] = b.instances(sop)
    assert still_b.pk == in_b.pk
    file_a, file_b = a.file_of(in_a), b.file_of(in_b)
    assert file_a != file_b
    assert file_a.is_relative_to(a.tenant.storage_root)
    assert file_b.is_relative_to(b.tenant.storage_root)
    assert dataset_bytes(file_a) == dataset_bytes(file_b) == dataset_bytes(path)


def test_resending_an_instance_succeeds_as_a_duplicate(dcmtk, sites, gateway_port, ct) -> None:
    a, _ = sites
    path, sop = ct
    assert storescu(gateway_port, a.ae, path).returncode == 0
    result = storescu(gateway_port, a.ae, path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(a.instances(sop)) == 1
    job = last_job(a)
    assert (job.status, job.duplicates, job.stored) == ("done", 1, 0)


def test_unknown_called_ae_title_is_rejected(dcmtk, sites, gateway_port, ct) -> None:
    path, sop = ct
    result = storescu(gateway_port, "NOPE", path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Association Rejected" in output
    assert "Called AE Title Not Recognized" in output
    assert all(site.instances(sop) == [] for site in sites)


def test_suspended_tenant_is_rejected(dcmtk, sites, gateway_port, ct) -> None:
    a, _ = sites
    path, sop = ct
    tenant_suspend(tenant=a.tenant, actor="tests", reason="unpaid")
    try:
        echo = echoscu(gateway_port, a.ae)
        store = storescu(gateway_port, a.ae, path)
    finally:
        connection.set_schema_to_public()
        tenant_resume(tenant=Tenant.objects.get(pk=a.tenant.pk), actor="tests")
    assert echo.returncode != 0
    # The rejection an unknown title gets: a suspended hospital's title is not revealed.
    assert "Association Rejected" in echo.stdout + echo.stderr
    assert "Called AE Title Not Recognized" in echo.stdout + echo.stderr
    assert store.returncode != 0
    assert a.instances(sop) == []
    assert echoscu(gateway_port, a.ae).returncode == 0


def ct_dataset() -> pydicom.Dataset:
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = generate_uid()
    return ds


def test_a_tenant_suspended_mid_association_stops_receiving(
    sites, gateway_port, monkeypatch
) -> None:
    a, _ = sites
    monkeypatch.setattr(gateway_module, "TENANT_RECHECK_SECONDS", 0.0)
    client = AE(ae_title="PYCLIENT")
    client.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = client.associate("127.0.0.1", gateway_port, ae_title=a.ae)
    assert assoc.is_established
    try:
        before, after = ct_dataset(), ct_dataset()
        assert assoc.send_c_store(before).Status == SUCCESS
        tenant_suspend(tenant=a.tenant, actor="tests", reason="unpaid")
        try:
            refused = assoc.send_c_store(after)
        finally:
            connection.set_schema_to_public()
            tenant_resume(tenant=Tenant.objects.get(pk=a.tenant.pk), actor="tests")
    finally:
        assoc.release()
    assert refused.Status == OUT_OF_RESOURCES and "suspended" in str(refused.ErrorComment)
    assert len(a.instances(str(before.SOPInstanceUID))) == 1
    assert a.instances(str(after.SOPInstanceUID)) == []


def test_one_tenant_cannot_take_every_association(sites, gateway_port, settings) -> None:
    a, b = sites
    settings.PORTAL_DICOM_TENANT_ASSOCIATIONS = 2
    client = AE(ae_title="PYCLIENT")
    client.add_requested_context(Verification)
    held = [client.associate("127.0.0.1", gateway_port, ae_title=a.ae) for _ in range(2)]
    try:
        assert all(assoc.is_established for assoc in held)
        third = client.associate("127.0.0.1", gateway_port, ae_title=a.ae)
        assert third.is_rejected
        assert (third.acceptor.primitive.result, third.acceptor.primitive.diagnostic) == (
            0x02,  # rejected-transient: try later
            0x02,  # local limit exceeded
        )
        other = client.associate("127.0.0.1", gateway_port, ae_title=b.ae)
        assert other.is_established  # the other tenant's slots are its own
        assert other.send_c_echo().Status == SUCCESS
        other.release()
    finally:
        for assoc in held:
            assoc.release()
    settings.PORTAL_DICOM_TENANT_ASSOCIATIONS = 16
    settings.PORTAL_DICOM_PEER_ASSOCIATIONS = 1
    # The gateway ends the released associations in their own threads, a moment after the
    # client's release returns: until then they still count against this address.
    deadline = time.monotonic() + 5
    one = client.associate("127.0.0.1", gateway_port, ae_title=b.ae)
    while not one.is_established and time.monotonic() < deadline:
        time.sleep(0.1)
        one = client.associate("127.0.0.1", gateway_port, ae_title=b.ae)
    try:
        assert one.is_established
        assert client.associate("127.0.0.1", gateway_port, ae_title=a.ae).is_rejected
    finally:
        one.release()


def test_silent_connections_cannot_take_the_gateway(sites, gateway_port) -> None:
    """65 connections that never ask for an association (more than the gateway's 64
    slots) from one address: a modality's C-ECHO to either tenant is still answered at
    once, and the oldest silent ones were dropped to make room."""
    a, b = sites
    silent = [socket.create_connection(("127.0.0.1", gateway_port)) for _ in range(65)]
    try:
        client = AE(ae_title="PYCLIENT")
        client.add_requested_context(Verification)
        client.acse_timeout = 5
        for site in (a, b):
            started = time.monotonic()
            assoc = client.associate("127.0.0.1", gateway_port, ae_title=site.ae)
            assert assoc.is_established, "a silent crowd refused a real association"
            assert assoc.send_c_echo().Status == SUCCESS
            assoc.release()
            assert time.monotonic() - started < 3
        dropped = 0
        for connection in silent:
            connection.settimeout(0.5)
            # Still open: among the few the gateway keeps waiting.
            with contextlib.suppress(TimeoutError):
                dropped += connection.recv(1) == b""
        assert dropped >= 65 - django_settings.PORTAL_DICOM_PEER_ASSOCIATIONS
    finally:
        for connection in silent:
            connection.close()


@pytest.fixture
def known_nodes_required(sites) -> Iterator[Site]:
    """Tenant a requires known nodes and lists only OTHERNODE at 127.0.0.1 at first."""
    a, _ = sites
    with schema_context(a.tenant.schema_name):
        TenantSettings.objects.get_or_create(pk=SINGLETON_ID)
        TenantSettings.objects.filter(pk=SINGLETON_ID).update(require_known_nodes=True)
        RemoteNode.objects.create(ae_title="OTHERNODE", host="127.0.0.1", port=104)
    try:
        yield a
    finally:
        with schema_context(a.tenant.schema_name):
            TenantSettings.objects.filter(pk=SINGLETON_ID).update(require_known_nodes=False)
            RemoteNode.objects.all().delete()


def test_unknown_calling_node_is_rejected_when_the_tenant_requires_known_nodes(
    dcmtk, known_nodes_required, gateway_port, sites
) -> None:
    a = known_nodes_required
    refused = echoscu(gateway_port, a.ae)
    assert refused.returncode != 0
    # The same rejection as for a title nobody has: titles cannot be enumerated.
    unknown = echoscu(gateway_port, "NOSUCHTITLE")
    assert "Called AE Title Not Recognized" in refused.stdout + refused.stderr
    assert "Called AE Title Not Recognized" in unknown.stdout + unknown.stderr
    # The other tenant does not require known nodes.
    assert echoscu(gateway_port, sites[1].ae).returncode == 0

    with schema_context(a.tenant.schema_name):
        RemoteNode.objects.create(ae_title=MODALITY, host="127.0.0.1", port=104)
    accepted = echoscu(gateway_port, a.ae)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    # The right AE title from a listed address only: another title is still refused.
    assert echoscu(gateway_port, a.ae, calling="INTRUDER").returncode != 0


def query(port: int, site: Site, calling: str) -> int | None:
    """A study-root C-FIND for everything from `calling`: its final status, or None when
    the gateway accepted the association but offered no Query/Retrieve context."""
    client = AE(ae_title=calling)
    client.add_requested_context(Verification)
    client.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = client.associate("127.0.0.1", port, ae_title=site.ae)
    assert assoc.is_established
    try:
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        if str(StudyRootQueryRetrieveInformationModelFind) not in accepted:
            return None
        keys = pydicom.Dataset()
        keys.QueryRetrieveLevel, keys.StudyInstanceUID = "STUDY", ""
        found = assoc.send_c_find(keys, StudyRootQueryRetrieveInformationModelFind)
        return [int(status.Status) for status, _identifier in found][-1]
    finally:
        assoc.release()


def test_query_retrieve_is_closed_to_unlisted_peers_by_default(sites, gateway_port) -> None:
    a, b = sites
    assert query(gateway_port, a, "STRANGER") is None  # echo and store only
    with schema_context(a.tenant.schema_name):
        RemoteNode.objects.create(ae_title="VIEWSTATION", host="127.0.0.1", port=104)
    try:
        assert query(gateway_port, a, "VIEWSTATION") == 0x0000
        assert query(gateway_port, b, "VIEWSTATION") is None  # listed by a, not by b
        assert query(gateway_port, a, "STRANGER") is None
        with schema_context(b.tenant.schema_name):
            TenantSettings.objects.get_or_create(pk=SINGLETON_ID)
            TenantSettings.objects.filter(pk=SINGLETON_ID).update(query_retrieve_from_any_node=True)
        assert query(gateway_port, b, "STRANGER") == 0x0000  # b opened it
    finally:
        with schema_context(a.tenant.schema_name):
            RemoteNode.objects.filter(ae_title="VIEWSTATION").delete()
        with schema_context(b.tenant.schema_name):
            TenantSettings.objects.filter(pk=SINGLETON_ID).update(
                query_retrieve_from_any_node=False
            )


def test_quota_exceeded_fails_the_store_with_out_of_resources(
    dcmtk, sites, gateway_port, ct
) -> None:
    a, _ = sites
    path, sop = ct
    original = a.tenant.quota_bytes
    Tenant.objects.filter(pk=a.tenant.pk).update(quota_bytes=1000)
    try:
        result = storescu(gateway_port, a.ae, path, MODALITY, "--verbose")
    finally:
        Tenant.objects.filter(pk=a.tenant.pk).update(quota_bytes=original)
    output = result.stdout + result.stderr
    assert "Refused: OutOfResources" in output, output
    assert a.instances(sop) == []
    job = last_job(a)
    assert (job.status, job.rejected, job.stored) == ("failed", 1, 0)
    with schema_context(a.tenant.schema_name):
        item = IngestItem.objects.get(job=job)
    assert item.reason_code == "quota"
    assert Path(item.quarantine_path).is_file()


def send(port: int, called: str, payload) -> tuple[int, str]:
    """C-STORE `payload` (a file path, sent as encoded, or a dataset) with pynetdicom."""
    ds = pydicom.dcmread(payload, stop_before_pixels=True) if isinstance(payload, Path) else payload
    client = AE(ae_title="PYCLIENT")
    client.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = client.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established
    try:
        status = assoc.send_c_store(payload)
    finally:
        assoc.release()
    return int(status.Status), str(status.get("ErrorComment", ""))


def test_compressed_instance_is_stored_in_its_transfer_syntax(
    sites, gateway_port, tmp_path
) -> None:
    a, b = sites
    path = tmp_path / "j2k.dcm"
    sop = fresh_copy(bundled("JPEG2000.dcm"), path)
    assert send(gateway_port, a.ae, path) == (SUCCESS, "")
    [stored] = a.instances(sop)
    assert stored.transfer_syntax_uid == JPEG2000
    assert dataset_bytes(a.file_of(stored)) == dataset_bytes(path)
    assert b.instances(sop) == []


def test_unusable_dataset_fails_with_its_reason(sites, gateway_port) -> None:
    a, _ = sites
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    del ds.StudyInstanceUID
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    status, comment = send(gateway_port, a.ae, ds)
    assert status == StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    assert "StudyInstanceUID" in comment
    assert a.instances(str(ds.SOPInstanceUID)) == []
    # Answered from its bytes at once; recorded in the association's job when it ends.
    item = recorded_item(a, str(ds.SOPInstanceUID))
    assert (item.outcome, item.reason_code) == (ItemOutcome.REJECTED, "missing-uid")
    assert Path(item.quarantine_path).is_file()


def test_a_command_naming_another_instance_than_its_data_set_is_refused(
    sites, gateway_port, tmp_path, monkeypatch
) -> None:
    a, _ = sites
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = generate_uid()
    path = tmp_path / "liar.dcm"
    claimed = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()  # what the command says
    ds.save_as(path)  # the file meta as set (enforcing the format would correct it)
    # Sent as the file is: pynetdicom takes the command's UIDs from its file meta.
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)
    client = AE(ae_title="PYCLIENT")
    client.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = client.associate("127.0.0.1", gateway_port, ae_title=a.ae)
    try:
        answer = assoc.send_c_store(path)
    finally:
        assoc.release()
    assert answer.Status == StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    assert "SOP Instance UID" in str(answer.ErrorComment)
    assert a.instances(str(ds.SOPInstanceUID)) == a.instances(str(claimed)) == []
    item = recorded_item(a, str(claimed))
    assert (item.outcome, item.reason_code) == (ItemOutcome.REJECTED, "command-mismatch")


def test_concurrent_associations_share_a_commit_and_get_their_own_answers(
    sites, gateway_port, monkeypatch
) -> None:
    """While one C-STORE is being indexed, three more arrive on three associations: the two
    valid ones go into the next batch together, and each sender hears its own outcome."""
    a, _ = sites
    batches: list[int] = []
    commits: list[gateway_module.GroupCommit] = []
    real_batch, real_store = gateway_module.store_batch, gateway_module.GroupCommit.store

    def store(self, pending):  # type: ignore[no-untyped-def]
        commits.append(self)
        real_store(self, pending)

    def first_waits_for_the_others(batch):  # type: ignore[no-untyped-def]
        batches.append(len(batch))
        deadline = time.monotonic() + 20
        key = batch[0].session.tenant.pk
        # The two other valid C-STOREs queue behind this batch; the broken one never does.
        while len(batches) == 1 and time.monotonic() < deadline:
            if len(commits[0]._waiting.get(key, [])) >= 2:
                break
            time.sleep(0.02)
        real_batch(batch)

    monkeypatch.setattr(gateway_module.GroupCommit, "store", store)
    monkeypatch.setattr(gateway_module, "store_batch", first_waits_for_the_others)

    def dataset(*, broken: bool = False) -> pydicom.Dataset:
        ds = pydicom.dcmread(bundled("CT_small.dcm"))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = generate_uid()
        if broken:
            del ds.StudyInstanceUID
        return ds

    sent = [dataset(), dataset(), dataset(broken=True), dataset()]
    answers: dict[int, tuple[int, str]] = {}

    def sender(index: int) -> None:
        answers[index] = send(gateway_port, a.ae, sent[index])

    first = threading.Thread(target=sender, args=(0,))
    first.start()
    deadline = time.monotonic() + 20
    while not batches and time.monotonic() < deadline:
        time.sleep(0.01)
    others = [threading.Thread(target=sender, args=(i,)) for i in (1, 2, 3)]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join(60)

    # The broken one is answered from its bytes, without joining a batch (and recorded
    # after its association): the two others share the second batch.
    assert batches == [1, 2]
    assert answers[0] == answers[1] == answers[3] == (SUCCESS, "")
    status, comment = answers[2]
    assert status == StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS and "StudyInstanceUID" in comment
    for ds in (sent[0], sent[1], sent[3]):
        assert len(a.instances(str(ds.SOPInstanceUID))) == 1
    assert a.instances(str(sent[2].SOPInstanceUID)) == []


def test_a_deflate_bomb_is_refused_with_memory_flat(
    sites, gateway_port, tmp_path, settings, monkeypatch
):
    """256 MiB of zeros in a 260 KiB deflated data set: refused with its reason, the
    gateway's memory (in this process) never holding more than a few chunks of it."""
    a, _ = sites
    settings.PORTAL_MAX_INSTANCE_BYTES = 16 << 20
    bomb = deflated_file(tmp_path / "bomb.dcm", pixel_bytes=256 << 20)
    # The sender streams the file as it is (pynetdicom would otherwise inflate it to send).
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)
    meta = pydicom.filereader.read_file_meta_info(bomb)  # reading more would inflate it
    client = AE(ae_title="PYCLIENT")
    client.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
    tracemalloc.start()
    try:
        assoc = client.associate("127.0.0.1", gateway_port, ae_title=a.ae)
        try:
            answer = assoc.send_c_store(bomb)
        finally:
            assoc.release()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert answer.Status == OUT_OF_RESOURCES
    assert "inflates to more than" in str(answer.ErrorComment)
    assert peak < 32 << 20
    assert a.instances(str(meta.MediaStorageSOPInstanceUID)) == []


def gateway_command(port: int, site: Site, log: Path, *options: str) -> subprocess.Popen:
    """`manage.py dicom_gateway` on `port`, once it answers `site`'s C-ECHO."""
    env = {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
        "DATABASE_URL": _test_database_url(),
        "PORTAL_STORAGE_ROOT": str(django_settings.PORTAL_STORAGE_ROOT),
        "PYTHONUNBUFFERED": "1",
    }
    command = [sys.executable, "manage.py", "dicom_gateway", "--host", "127.0.0.1"]
    command += ["--port", str(port), *options]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and echoscu(port, site.ae).returncode != 0:
        if process.poll() is not None:
            pytest.fail(log.read_text())
        time.sleep(0.3)
    return process


def test_pooled_connections_keep_each_association_in_its_tenant(dcmtk, sites, tmp_path) -> None:
    """The command's gateway hands database connections from one association's thread to
    the next (portal/dbpool.py): twelve associations alternating between two tenants each
    store into their own tenant only, on a few PostgreSQL backends, not one each."""
    a, b = sites
    port = _free_port()

    def sessions() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
            )
            return int(cursor.fetchone()[0])

    gateway = gateway_command(port, a, tmp_path / "gateway.log")
    try:
        before = sessions()
        stored: list[tuple[Site, str]] = []
        for number in range(12):
            site = (a, b)[number % 2]
            path = tmp_path / f"{number}.dcm"
            sop = fresh_copy(bundled("CT_small.dcm"), path)
            result = storescu(port, site.ae, path)
            assert result.returncode == 0, result.stdout + result.stderr
            stored.append((site, sop))
        opened = sessions() - before
    finally:
        gateway.terminate()
        gateway.wait(60)
    for site, sop in stored:
        other = b if site is a else a
        assert len(site.instances(sop)) == 1 and other.instances(sop) == []
    assert opened < 8, f"{opened} PostgreSQL sessions for 12 associations"


def test_two_gateway_processes_share_the_port(dcmtk, sites, tmp_path) -> None:
    """`--processes 2`: two children listen on one port (SO_REUSEPORT); eight concurrent
    storescu associations are all stored; SIGTERM to the parent stops both children."""
    a, _ = sites
    port = _free_port()
    parent = gateway_command(port, a, tmp_path / "gateway.log", "--processes", "2")
    try:
        children: list[str] = []
        children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()
        assert len(children) == 2
        files, sops = [], []
        for number in range(8):
            path = tmp_path / f"{number}.dcm"
            sops.append(fresh_copy(bundled("CT_small.dcm"), path))
            files.append(path)
        senders = [
            subprocess.Popen(
                [STORESCU, "-aet", MODALITY, "-aec", a.ae, "127.0.0.1", str(port), str(path)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for path in files
        ]
        assert [sender.wait(60) for sender in senders] == [0] * 8
        assert all(len(a.instances(sop)) == 1 for sop in sops)
    finally:
        parent.terminate()
        parent.wait(60)
    assert parent.returncode == 0
    for child in children:
        assert (
            not Path(f"/proc/{child}").exists()
            or "zombie" in Path(f"/proc/{child}/status").read_text()
        )


def test_command_is_installed_and_documents_its_options() -> None:
    assert get_commands().get("dicom_gateway") == "dicomnet"
    parser = load_command_class("dicomnet", "dicom_gateway").create_parser(
        "manage.py", "dicom_gateway"
    )
    usage = parser.format_help()
    for option in ("--port", "--host", "--ae-title", "--processes"):
        assert option in usage


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns on the corpus's values
def test_the_hostile_corpus_by_c_store_gets_each_kinds_status_and_reason(
    sites, gateway_port, tmp_path, monkeypatch
) -> None:
    """Every kind of tests/studies/hostile.py that can travel as a C-STORE, sent as its
    bytes on one association: each refusal answered with its reason's status and an
    ErrorComment, recorded with its code; each valid kind stored; the association lives."""
    a, b = sites
    specimens = [s for s in corpus(tmp_path) if s.dimse]
    metas = {s.kind: pydicom.filereader.read_file_meta_info(s.path) for s in specimens}
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)
    client = AE(ae_title="PYCLIENT")
    for pair in {(m.MediaStorageSOPClassUID, m.TransferSyntaxUID) for m in metas.values()}:
        client.add_requested_context(*pair)
    assoc = client.associate("127.0.0.1", gateway_port, ae_title=a.ae)
    assert assoc.is_established
    answers = {}
    try:
        for specimen in specimens:
            answer = assoc.send_c_store(specimen.path)
            answers[specimen.kind] = (int(answer.Status), str(answer.get("ErrorComment", "")))
    finally:
        assoc.release()
    wrong = {}
    for specimen in specimens:
        status, comment = answers[specimen.kind]
        expected = (
            SUCCESS
            if specimen.expected == STORED
            else store_status(outcome=ItemOutcome.REJECTED, reason_code=specimen.expected)
        )
        if status != expected or (status != SUCCESS and not comment):
            wrong[specimen.kind] = (hex(expected), hex(status), comment)
    assert wrong == {}
    for specimen in specimens:
        stored = a.instances(specimen.sop_instance_uid)
        assert len(stored) == (specimen.expected == STORED), specimen.kind
        assert b.instances(specimen.sop_instance_uid) == []
    job = last_job(a)
    with schema_context(a.tenant.schema_name):
        codes = Counter(
            job.items.exclude(outcome=ItemOutcome.STORED).values_list("reason_code", flat=True)
        )
    assert codes == Counter(s.expected for s in specimens if s.expected != STORED)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns on the UIDs
@pytest.mark.parametrize("uid", ["", "        "])
def test_a_c_store_naming_no_instance_is_answered_at_once(
    sites, gateway_port, tmp_path, monkeypatch, uid
) -> None:
    """pynetdicom leaves such a request unanswered; the sender would wait 30 s."""
    a, _ = sites
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = uid  # what the command will say
    path = tmp_path / "nameless.dcm"
    ds.save_as(path)
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)
    client = AE(ae_title="PYCLIENT")
    client.dimse_timeout = 10  # an unanswered request fails the test, not after 30 s
    client.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = client.associate("127.0.0.1", gateway_port, ae_title=a.ae)
    try:
        answer = assoc.send_c_store(path)
        assert assoc.is_established  # the association goes on
    finally:
        assoc.release()
    assert answer.Status == StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    assert "names no SOP Instance UID" in str(answer.ErrorComment)
    assert a.instances(str(ds.SOPInstanceUID)) == []
    item = recorded_item(a, "instance")
    assert (item.outcome, item.reason_code) == (ItemOutcome.REJECTED, "command-mismatch")


@contextlib.contextmanager
def echo_association(title: str, site: Site) -> Iterator[tuple[DicomGateway, Any]]:
    """A gateway of its own on a free port, and an association to `site` held open on it."""
    gateway = DicomGateway(ae_title=title)
    port = _free_port()
    server = gateway.start("127.0.0.1", port)
    try:
        client = AE(ae_title=MODALITY)
        client.add_requested_context(Verification)
        assoc = client.associate("127.0.0.1", port, ae_title=site.ae)
        assert assoc.is_established
        yield gateway, assoc
    finally:
        gateway.stop(server, timeout=5)


def test_a_silent_association_is_aborted_after_the_idle_timeout(sites, settings) -> None:
    a, _ = sites
    settings.PORTAL_DICOM_IDLE_TIMEOUT = 1
    with echo_association("IDLEGW", a) as (_, assoc):
        deadline = time.monotonic() + 10
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.1)  # sends nothing, as a stalled modality would
        assert assoc.is_aborted
        assert time.monotonic() < deadline - 7  # within about the 1 s configured


def test_open_associations_are_counted_per_tenant_for_the_platform_page(sites) -> None:
    a, _ = sites
    with echo_association("COUNTGW", a) as (gateway, assoc):
        deadline = time.monotonic() + 5
        while gateway.association_counts() != {a.tenant.slug: 1} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gateway.association_counts() == {a.tenant.slug: 1}
        assoc.release()
        deadline = time.monotonic() + 5
        while gateway.association_counts() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gateway.association_counts() == {}


def test_a_tenant_being_upgraded_is_rejected_for_now(sites, gateway_port, monkeypatch) -> None:
    """The gateway asks the upgrade gate (tenants/figures.py): a transient rejection, so the
    modality retries later; the other tenant is served."""
    from dicomnet import gateway as gateway_module

    a, b = sites
    monkeypatch.setattr(gateway_module, "schema_behind", lambda tenant: tenant.pk == b.tenant.pk)
    ae = AE(ae_title=MODALITY)
    ae.add_requested_context(Verification)
    refused = ae.associate("127.0.0.1", gateway_port, ae_title=b.ae)
    assert refused.is_rejected
    assert refused.acceptor.primitive.result == 0x02  # rejected-transient
    served = ae.associate("127.0.0.1", gateway_port, ae_title=a.ae)
    assert served.is_established
    served.release()
