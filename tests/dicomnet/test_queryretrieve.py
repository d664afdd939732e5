"""Query/Retrieve on a real port: findscu, movescu and getscu against two committed tenants.

Tenant a holds two patients (one study of a CT and an MR series, one unicode-named patient
with a single CT); tenant b holds a third. Every retrieval is also tried at b's AE title with
a's exact UIDs, which must find, move and get nothing. The first tests are pure: identifiers
become index queries and response datasets without a database.
"""

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from django_tenants.utils import schema_context
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from accounts.models import User
from audit.models import AuditEvent
from configuration.models import RemoteNode
from configuration.services import node_create
from dicomnet.queryretrieve import (
    CANCELLED,
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
    MOVE_DESTINATION_UNKNOWN,
    PENDING,
    PENDING_KEYS_UNSUPPORTED,
    UNABLE_TO_PROCESS,
    IdentifierError,
    Root,
    _find_responses,
    find_request,
    retrieve_request,
)
from studies.index.query import Level
from tests.conftest import require_tool
from tests.dicomnet import test_gateway
from tests.dicomnet.test_gateway import (
    MODALITY,
    STORESCU,
    TRAILING_PADDING,
    Site,
    _free_port,
    bundled,
    dataset_bytes,
    run,
)

pytestmark = pytest.mark.live
# The pure tests build deliberately invalid values; pydicom warns about each.
invalid_values = pytest.mark.filterwarnings("ignore:Invalid value for VR")

# The gateway module's fixtures, bound here so this module gets its own tenants and gateway.
committed = test_gateway.committed
sites = test_gateway.sites
gateway_port = test_gateway.gateway_port

FINDSCU, MOVESCU, GETSCU, STORESCP = (
    "/usr/bin/findscu",
    "/usr/bin/movescu",
    "/usr/bin/getscu",
    "/usr/bin/storescp",
)
DESTINATION = "QRDEST"
QR_CLIENTS = ("QRCLIENT", "PYQR")


def identifier(level: str | None, **keys: str) -> Dataset:
    ds = Dataset()
    if level is not None:
        ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


# -- pure: identifiers to index queries --------------------------------------------------------


def test_series_identifier_becomes_an_index_query_with_exactly_its_keys() -> None:
    request = find_request(
        identifier(
            "SERIES",
            StudyInstanceUID="1.2.3",
            Modality="CT",
            SeriesDescription="",
            PatientName="",
            SOPInstanceUID="",
        ),
        Root.STUDY,
    )
    assert request.level == Level.SERIES
    assert {(a.keyword, v) for a, v in request.query.matches} == {
        ("StudyInstanceUID", "1.2.3"),
        ("Modality", "CT"),
    }
    keys = {key.keyword: key for key in request.keys}
    assert set(keys) == {
        "StudyInstanceUID",
        "Modality",
        "SeriesDescription",
        "PatientName",
        "SOPInstanceUID",
    }
    # A lower level's key is answered zero-length; asked without a value, that is no warning.
    assert keys["SOPInstanceUID"].attribute is None
    assert request.pending_status == PENDING

    row = {
        "study__study_instance_uid": "1.2.3",
        "series_instance_uid": "1.2.3.4",
        "modality": "CT",
        "description": "",
        "study__patient_name": "Müller^Jürgen",
    }
    answer = request.response(row, retrieve_ae="ACME")
    assert answer.SpecificCharacterSet == "ISO_IR 192"
    assert (answer.QueryRetrieveLevel, answer.RetrieveAETitle) == ("SERIES", "ACME")
    assert answer.PatientName == "Müller^Jürgen"
    assert answer["PatientName"].VR == "PN"
    assert answer.Modality == "CT"
    assert answer.SeriesDescription in ("", None)
    assert answer["SOPInstanceUID"].VR == "UI"
    assert answer["SOPInstanceUID"].value in ("", None)
    assert {e.keyword for e in answer} == set(keys) | {
        "SpecificCharacterSet",
        "QueryRetrieveLevel",
        "RetrieveAETitle",
    }


def test_keys_that_cannot_be_matched_make_pending_responses_warn() -> None:
    request = find_request(
        identifier("STUDY", SOPInstanceUID="1.2.3", NumberOfStudyRelatedInstances="4"),
        Root.STUDY,
    )
    assert request.query.matches == []
    assert set(request.unmatched) == {"NumberOfStudyRelatedInstances", "SOPInstanceUID"}
    assert request.pending_status == PENDING_KEYS_UNSUPPORTED


@pytest.mark.parametrize(
    ("level", "keys", "root", "status"),
    [
        (None, {"PatientName": "*"}, Root.STUDY, IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS),
        ("WARD", {"PatientName": "*"}, Root.STUDY, IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS),
        ("PATIENT", {"PatientID": "1"}, Root.STUDY, IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS),
        ("STUDY", {"StudyDate": "2024-01-01"}, Root.STUDY, UNABLE_TO_PROCESS),
        ("STUDY", {"StudyInstanceUID": "1.2.x"}, Root.PATIENT, UNABLE_TO_PROCESS),
        ("PATIENT", {"PatientBirthDate": "19701301"}, Root.PATIENT, UNABLE_TO_PROCESS),
    ],
)
@invalid_values
def test_invalid_find_identifiers_are_refused_with_a_status(level, keys, root, status) -> None:
    with pytest.raises(IdentifierError) as refused:
        find_request(identifier(level, **keys), root)
    assert refused.value.status == status
    assert refused.value.comment


@invalid_values
def test_retrieve_identifiers_need_the_unique_key_of_their_level() -> None:
    request = retrieve_request(
        identifier("SERIES", StudyInstanceUID="1.2.3", SeriesInstanceUID="1.2.3.4\\1.2.3.5"),
        Root.STUDY,
    )
    assert request.query.level == Level.INSTANCE
    assert request.keys == {"StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "1.2.3.4\\1.2.3.5"}
    # Keys below the level and non-unique keys do not narrow a retrieve.
    study = retrieve_request(
        identifier("STUDY", StudyInstanceUID="1.2.3", SOPInstanceUID="9.9", PatientName="X*"),
        Root.STUDY,
    )
    assert study.keys == {"StudyInstanceUID": "1.2.3"}
    patient = retrieve_request(identifier("PATIENT", PatientID="P1"), Root.PATIENT)
    assert patient.keys == {"PatientID": "P1"}

    for ds, root, status in [
        (identifier("STUDY", PatientID="P1"), Root.PATIENT, IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS),
        (identifier("PATIENT", PatientID="P1"), Root.STUDY, IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS),
        (identifier("PATIENT", PatientID="P*"), Root.PATIENT, UNABLE_TO_PROCESS),
        (identifier("STUDY", StudyInstanceUID="*"), Root.STUDY, UNABLE_TO_PROCESS),
    ]:
        with pytest.raises(IdentifierError) as refused:
            retrieve_request(ds, root)
        assert refused.value.status == status, ds


def test_find_responses_stop_at_a_cancel() -> None:
    request = find_request(identifier("STUDY", StudyInstanceUID=""), Root.STUDY)
    rows = [{"study_instance_uid": f"1.2.{n}"} for n in range(5)]
    seen: list[object] = []
    answers = _find_responses(request, rows, retrieve_ae="A", cancelled=lambda: len(seen) >= 2)
    for status, _ in answers:
        seen.append(status)
    assert seen == [PENDING, PENDING, CANCELLED]


# -- the archive on a real port ---------------------------------------------------------------


@dataclass(frozen=True)
class Archive:
    """What the module stored: a's two patients and studies, b's one."""

    tag: str
    study1: str
    series_ct: str
    series_mr: str
    study2: str
    study3: str
    files: dict[str, Path]  # SOP Instance UID -> the file sent (a's instances only)
    ct_instances: tuple[str, ...]
    patient2_instance: str

    @property
    def patient1(self) -> str:
        return f"QR{self.tag}1"

    @property
    def patient2(self) -> str:
        return f"QR{self.tag}2"

    @property
    def patient3(self) -> str:
        return f"QR{self.tag}3"


def make_instance(source: str, target: Path, **attributes: object) -> str:
    ds = pydicom.dcmread(bundled(source))
    if TRAILING_PADDING in ds:
        del ds[TRAILING_PADDING]
    ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(target, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


@pytest.fixture(scope="module")
def archive(sites, gateway_port, tmp_path_factory) -> Archive:
    require_tool("/usr/bin/storescu", "DCMTK")
    a, b = sites
    folder = tmp_path_factory.mktemp("archive")
    tag = uuid.uuid4().hex[:6].upper()
    study1, series_ct, series_mr = generate_uid(), generate_uid(), generate_uid()
    study2, study3 = generate_uid(), generate_uid()
    jane = {"PatientName": "Doe^Jane", "PatientID": f"QR{tag}1", "PatientBirthDate": "19700101"}
    files: dict[str, Path] = {}
    ct: list[str] = []

    def add(source: str, name: str, **attributes: object) -> str:
        path = folder / name
        sop = make_instance(source, path, **attributes)
        files[sop] = path
        return sop

    for number in (1, 2):
        ct.append(
            add(
                "CT_small.dcm",
                f"ct{number}.dcm",
                **jane,
                StudyInstanceUID=study1,
                SeriesInstanceUID=series_ct,
                StudyDate="20240115",
                InstanceNumber=number,
                SeriesNumber=1,
            )
        )
    add(
        "MR_small.dcm",
        "mr.dcm",
        **jane,
        StudyInstanceUID=study1,
        SeriesInstanceUID=series_mr,
        StudyDate="20240115",
        SeriesNumber=2,
    )
    second = add(
        "CT_small.dcm",
        "unicode.dcm",
        PatientName="Müller^Jürgen",
        PatientID=f"QR{tag}2",
        StudyInstanceUID=study2,
        SeriesInstanceUID=generate_uid(),
        StudyDate="20230601",
    )
    paths = [str(path) for path in files.values()]
    result = run(STORESCU, "-aet", MODALITY, "-aec", a.ae, "127.0.0.1", str(gateway_port), *paths)
    assert result.returncode == 0, result.stdout + result.stderr
    b_file = folder / "b.dcm"
    make_instance(
        "CT_small.dcm",
        b_file,
        PatientName="Other^Bob",
        PatientID=f"QR{tag}3",
        StudyInstanceUID=study3,
        SeriesInstanceUID=generate_uid(),
        StudyDate="20240115",
    )
    result = test_gateway.storescu(gateway_port, b.ae, b_file)
    assert result.returncode == 0, result.stdout + result.stderr
    for sop in files:
        assert len(a.instances(sop)) == 1
    # Query/Retrieve is closed to unlisted peers: both tenants list this module's clients.
    for site in sites:
        with schema_context(site.tenant.schema_name):
            for title in QR_CLIENTS:
                RemoteNode.objects.get_or_create(ae_title=title, host="127.0.0.1", port=104)
    return Archive(
        tag=tag,
        study1=study1,
        series_ct=series_ct,
        series_mr=series_mr,
        study2=study2,
        study3=study3,
        files=files,
        ct_instances=tuple(ct),
        patient2_instance=second,
    )


@pytest.fixture
def qr_tools() -> None:
    for tool in (FINDSCU, MOVESCU, GETSCU, STORESCP):
        require_tool(tool, "DCMTK")


def findscu(port: int, site: Site, model: str, folder: Path, *keys: str) -> list[Dataset]:
    """findscu's answers, extracted to files and read back; fails on a non-zero exit."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("rsp*.dcm"):
        old.unlink()
    args = [arg for key in keys for arg in ("-k", key)]
    result = run(
        FINDSCU, model, "-aet", "QRCLIENT", "-aec", site.ae, "-X", "-od", str(folder),
        *args, "127.0.0.1", str(port),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return [pydicom.dcmread(path, force=True) for path in sorted(folder.glob("rsp*.dcm"))]


def audit_rows(site: Site, action: str) -> list[AuditEvent]:
    with schema_context(site.tenant.schema_name):
        return list(AuditEvent.objects.filter(action=action).order_by("pk"))


def test_findscu_study_root_matches_wildcards_and_date_ranges(
    qr_tools, sites, gateway_port, archive, tmp_path
) -> None:
    a, _ = sites
    before = len(audit_rows(a, "dimse.find"))
    keys = (
        "QueryRetrieveLevel=STUDY",
        "PatientName=doe*",
        "StudyDate=20240101-20241231",
        "StudyInstanceUID",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedInstances",
        "StudyDescription",
    )
    [answer] = findscu(gateway_port, a, "-S", tmp_path, *keys)
    assert answer.StudyInstanceUID == archive.study1
    assert answer.PatientName == "Doe^Jane"
    assert set(answer.ModalitiesInStudy) == {"CT", "MR"}
    assert int(answer.NumberOfStudyRelatedInstances) == 3
    assert answer.RetrieveAETitle == a.ae
    assert answer.SpecificCharacterSet == "ISO_IR 192"
    assert answer.QueryRetrieveLevel == "STUDY"
    assert {e.keyword for e in answer} == {
        "SpecificCharacterSet",
        "StudyDate",
        "QueryRetrieveLevel",
        "RetrieveAETitle",
        "ModalitiesInStudy",
        "StudyDescription",
        "PatientName",
        "StudyInstanceUID",
        "NumberOfStudyRelatedInstances",
    }
    # Open ranges: up to 2023 finds only the other study; from February 2024 finds nothing.
    earlier = findscu(
        gateway_port, a, "-S", tmp_path, keys[0], "StudyInstanceUID", "StudyDate=-20231231"
    )
    assert [s.StudyInstanceUID for s in earlier] == [archive.study2]
    assert findscu(gateway_port, a, "-S", tmp_path, *keys[:2], "StudyDate=20240201-") == []

    [audit] = audit_rows(a, "dimse.find")[before : before + 1]
    assert audit.actor_name == "QRCLIENT@127.0.0.1"
    assert audit.details["level"] == "STUDY"
    assert audit.details["matches"] == 1
    assert audit.details["keys"]["PatientName"] == "doe*"


def test_findscu_patient_root_at_every_level(
    qr_tools, sites, gateway_port, archive, tmp_path
) -> None:
    a, _ = sites
    [patient] = findscu(
        gateway_port, a, "-P", tmp_path, "QueryRetrieveLevel=PATIENT",
        f"PatientID={archive.patient2}", "PatientName", "NumberOfPatientRelatedStudies",
    )  # fmt: skip
    assert patient.PatientName == "Müller^Jürgen"  # sent as UTF-8, decoded as such
    assert int(patient.NumberOfPatientRelatedStudies) == 1

    [study] = findscu(
        gateway_port, a, "-P", tmp_path, "QueryRetrieveLevel=STUDY",
        f"PatientID={archive.patient2}", "StudyInstanceUID", "StudyDate",
    )  # fmt: skip
    assert (study.StudyInstanceUID, study.StudyDate) == (archive.study2, "20230601")

    series = findscu(
        gateway_port, a, "-P", tmp_path, "QueryRetrieveLevel=SERIES",
        f"PatientID={archive.patient1}", f"StudyInstanceUID={archive.study1}",
        "SeriesInstanceUID", "Modality", "NumberOfSeriesRelatedInstances",
    )  # fmt: skip
    assert {
        (s.SeriesInstanceUID, s.Modality, int(s.NumberOfSeriesRelatedInstances)) for s in series
    } == {
        (archive.series_ct, "CT", 2),
        (archive.series_mr, "MR", 1),
    }

    images = findscu(
        gateway_port, a, "-P", tmp_path, "QueryRetrieveLevel=IMAGE",
        f"PatientID={archive.patient1}", f"StudyInstanceUID={archive.study1}",
        f"SeriesInstanceUID={archive.series_ct}", "SOPInstanceUID", "InstanceNumber", "Rows",
    )  # fmt: skip
    assert [(i.SOPInstanceUID, int(i.InstanceNumber), i.Rows) for i in images] == [
        (archive.ct_instances[0], 1, 128),
        (archive.ct_instances[1], 2, 128),
    ]


def test_findscu_at_the_other_tenant_finds_nothing_of_a(
    qr_tools, sites, gateway_port, archive, tmp_path
) -> None:
    _, b = sites
    for model, keys in [
        ("-S", ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={archive.study1}"]),
        ("-S", ["QueryRetrieveLevel=SERIES", f"SeriesInstanceUID={archive.series_ct}"]),
        ("-S", ["QueryRetrieveLevel=IMAGE", f"SOPInstanceUID={archive.ct_instances[0]}"]),
        ("-P", ["QueryRetrieveLevel=PATIENT", f"PatientID={archive.patient1}"]),
    ]:
        assert findscu(gateway_port, b, model, tmp_path, *keys) == [], keys
    everything = findscu(
        gateway_port, b, "-S", tmp_path, "QueryRetrieveLevel=STUDY", "StudyInstanceUID"
    )
    assert [s.StudyInstanceUID for s in everything] == [archive.study3]


def scu(port: int, site: Site, sop_class: str) -> Association:
    client = AE(ae_title="PYQR")
    client.add_requested_context(sop_class)
    assoc = client.associate("127.0.0.1", port, ae_title=site.ae)
    assert assoc.is_established
    return assoc


def c_find(
    port: int, site: Site, ds: Dataset, sop_class=StudyRootQueryRetrieveInformationModelFind
):
    assoc = scu(port, site, sop_class)
    try:
        return [
            (int(status.Status), status, answer)
            for status, answer in assoc.send_c_find(ds, sop_class)
        ]
    finally:
        assoc.release()


@invalid_values
def test_find_statuses_for_invalid_and_partly_supported_identifiers(
    sites, gateway_port, archive
) -> None:
    a, b = sites
    [(status, response, _)] = c_find(gateway_port, a, identifier("WARD", PatientName="*"))
    assert status == IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    assert "QueryRetrieveLevel" in response.ErrorComment
    [(status, response, _)] = c_find(
        gateway_port, a, identifier("STUDY", StudyDate="15.01.2024", StudyInstanceUID="")
    )
    assert status == UNABLE_TO_PROCESS
    assert "date" in response.ErrorComment
    [(status, _, _)] = c_find(
        gateway_port,
        a,
        identifier("PATIENT", PatientID="1"),
        StudyRootQueryRetrieveInformationModelFind,
    )
    assert status == IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS

    answers = c_find(
        gateway_port,
        a,
        identifier("STUDY", StudyInstanceUID=archive.study1, BodyPartExamined="CHEST"),
    )
    assert [status for status, _, _ in answers] == [PENDING_KEYS_UNSUPPORTED, 0x0000]
    assert answers[0][2].StudyInstanceUID == archive.study1

    failures = [r for r in audit_rows(a, "dimse.find") if r.outcome == "failure"]
    assert {r.details["status"] for r in failures} >= {"0xA900", "0xC000"}
    assert not [r for r in audit_rows(b, "dimse.find") if r.outcome == "failure"]


@pytest.fixture(scope="module")
def destination(tmp_path_factory) -> Iterator[tuple[int, Path]]:
    """A storescp on a free port, writing what it receives to a folder, and the calling AE
    title of each C-STORE it takes to `calling.log` beside that folder."""
    require_tool(STORESCP, "DCMTK")
    folder = tmp_path_factory.mktemp("received")
    port = _free_port()
    calling_log = folder.parent / "calling.log"
    process = subprocess.Popen(
        [
            STORESCP,
            "-aet",
            DESTINATION,
            "+xa",
            "-od",
            str(folder),
            "--exec-on-reception",
            f"echo #a >> {calling_log}",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "storescp did not start"
            time.sleep(0.05)
    try:
        yield port, folder
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def registered(sites, destination) -> Iterator[Path]:
    """The storescp listed as a node of tenant a only; its folder emptied first."""
    a, _ = sites
    port, folder = destination
    for old in folder.iterdir():
        old.unlink() if old.is_file() else shutil.rmtree(old)
    with schema_context(a.tenant.schema_name):
        admin = User.objects.get(username="admin")
        node_create(actor=admin, ae_title=DESTINATION, host="127.0.0.1", port=port)
    try:
        yield folder
    finally:
        for site in sites:
            with schema_context(site.tenant.schema_name):
                RemoteNode.objects.filter(ae_title=DESTINATION).delete()


def received(folder: Path) -> dict[str, Dataset]:
    datasets = [pydicom.dcmread(path) for path in folder.iterdir() if path.is_file()]
    return {str(ds.SOPInstanceUID): ds for ds in datasets}


def same_content(got: Dataset, sent: Path) -> bool:
    """The received dataset is the sent one byte for byte (the file meta is the receiver's)."""
    return dataset_bytes(Path(got.filename)) == dataset_bytes(sent)


def movescu(port: int, site: Site, destination: str, *keys: str):
    args = [arg for key in keys for arg in ("-k", key)]
    return run(
        MOVESCU, "-v", "-S", "-aet", "QRCLIENT", "-aec", site.ae, "-aem", destination,
        *args, "127.0.0.1", str(port),
    )  # fmt: skip


def test_movescu_sends_a_study_to_the_tenants_registered_node(
    qr_tools, sites, gateway_port, archive, registered
) -> None:
    a, _ = sites
    result = movescu(
        gateway_port,
        a,
        DESTINATION,
        "QueryRetrieveLevel=STUDY",
        f"StudyInstanceUID={archive.study1}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    got = received(registered)
    sent = {sop: pydicom.dcmread(path) for sop, path in archive.files.items()}
    study1 = {sop for sop, ds in sent.items() if ds.StudyInstanceUID == archive.study1}
    assert set(got) == study1
    for sop in study1:
        assert same_content(got[sop], archive.files[sop])
        assert got[sop].PixelData == sent[sop].PixelData
        assert got[sop].SOPClassUID == sent[sop].SOPClassUID
        assert got[sop].PatientName == "Doe^Jane"
    # The destination is called by the tenant's AE title, which its users configured.
    calling = (registered.parent / "calling.log").read_text().split()
    assert calling and set(calling) == {a.ae}
    [audit] = audit_rows(a, "dimse.move")[-1:]
    assert audit.details["instances"] == 3
    assert audit.details["destination"].startswith(f"{DESTINATION}@127.0.0.1:")
    assert audit.object_id == archive.study1


def c_move(port: int, site: Site, ds: Dataset, destination: str) -> list[tuple[int, Dataset]]:
    sop_class = StudyRootQueryRetrieveInformationModelMove
    assoc = scu(port, site, sop_class)
    try:
        return [(int(s.Status), s) for s, _ in assoc.send_c_move(ds, destination, sop_class)]
    finally:
        assoc.release()


def test_move_to_an_unknown_destination_fails_with_a801(
    sites, gateway_port, archive, registered
) -> None:
    a, b = sites
    study = identifier("STUDY", StudyInstanceUID=archive.study1)
    [(status, _)] = c_move(gateway_port, a, study, "NOWHERE")
    assert status == MOVE_DESTINATION_UNKNOWN
    # Registered in a only: b does not know it.
    [(status, _)] = c_move(gateway_port, b, study, DESTINATION)
    assert status == MOVE_DESTINATION_UNKNOWN
    assert received(registered) == {}
    assert audit_rows(b, "dimse.move")[-1].outcome == "denied"
    # An invalid identifier to a known destination: refused, nothing sent.
    *_, (status, response) = c_move(gateway_port, a, identifier("STUDY"), DESTINATION)
    assert status == IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    assert "StudyInstanceUID" in response.ErrorComment
    assert received(registered) == {}


def test_move_to_a_destination_outside_the_egress_policy_sends_nothing(
    settings, sites, gateway_port, archive, registered
) -> None:
    """A node listed while its network was allowed: once the platform no longer allows it,
    the gateway does not connect there (SSRF through C-MOVE)."""
    settings.PORTAL_DICOM_ALLOWED_NETWORKS = []
    a, _ = sites
    study = identifier("STUDY", StudyInstanceUID=archive.study1)
    [(status, _)] = c_move(gateway_port, a, study, DESTINATION)
    assert status == MOVE_DESTINATION_UNKNOWN
    assert received(registered) == {}
    audit = audit_rows(a, "dimse.move")[-1]
    assert audit.outcome == "denied"
    assert audit.details["reason"] == "address refused by the egress policy"


def test_move_at_the_other_tenant_sends_nothing_of_a(
    qr_tools, sites, gateway_port, archive, registered, destination
) -> None:
    _, b = sites
    with schema_context(b.tenant.schema_name):
        RemoteNode.objects.create(ae_title=DESTINATION, host="127.0.0.1", port=destination[0])
    for keys in [
        ("QueryRetrieveLevel=STUDY", f"StudyInstanceUID={archive.study1}"),
        ("QueryRetrieveLevel=SERIES", f"StudyInstanceUID={archive.study1}",
         f"SeriesInstanceUID={archive.series_ct}"),
        ("QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={archive.study1}",
         f"SeriesInstanceUID={archive.series_ct}", f"SOPInstanceUID={archive.ct_instances[0]}"),
    ]:  # fmt: skip
        result = movescu(gateway_port, b, DESTINATION, *keys)
        assert result.returncode == 0, result.stdout + result.stderr
    assert received(registered) == {}
    assert [r.details["instances"] for r in audit_rows(b, "dimse.move")[-3:]] == [0, 0, 0]


def getscu(port: int, site: Site, model: str, folder: Path, *keys: str):
    folder.mkdir(parents=True, exist_ok=True)
    args = [arg for key in keys for arg in ("-k", key)]
    result = run(
        GETSCU, model, "-aet", "QRCLIENT", "-aec", site.ae, "-od", str(folder),
        *args, "127.0.0.1", str(port),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return received(folder)


def test_getscu_retrieves_a_series_and_a_patient(
    qr_tools, sites, gateway_port, archive, tmp_path
) -> None:
    a, _ = sites
    got = getscu(
        gateway_port, a, "-S", tmp_path / "series", "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={archive.study1}", f"SeriesInstanceUID={archive.series_ct}",
    )  # fmt: skip
    assert set(got) == set(archive.ct_instances)
    for sop, ds in got.items():
        # getscu took the CT in Implicit VR Little Endian: equal elements, not equal bytes.
        assert ds.file_meta.TransferSyntaxUID in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
        assert ds == pydicom.dcmread(archive.files[sop])

    patient = getscu(
        gateway_port, a, "-P", tmp_path / "patient", "QueryRetrieveLevel=PATIENT",
        f"PatientID={archive.patient2}",
    )  # fmt: skip
    assert set(patient) == {archive.patient2_instance}
    assert patient[archive.patient2_instance].PatientName == "Müller^Jürgen"
    audit = audit_rows(a, "dimse.get")[-1]
    assert (audit.details["level"], audit.details["instances"]) == ("PATIENT", 1)


def test_getscu_at_the_other_tenant_gets_nothing_of_a(
    qr_tools, sites, gateway_port, archive, tmp_path
) -> None:
    _, b = sites
    got = getscu(
        gateway_port, b, "-S", tmp_path, "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={archive.study1}", f"SeriesInstanceUID={archive.series_ct}",
    )  # fmt: skip
    assert got == {}
    assert getscu(
        gateway_port, b, "-P", tmp_path, "QueryRetrieveLevel=PATIENT",
        f"PatientID={archive.patient1}",
    ) == {}  # fmt: skip


def test_patient_root_find_of_a_patient_without_patient_id_is_lenient(
    sites, gateway_port, archive
) -> None:
    a, _ = sites
    answers = c_find(
        gateway_port,
        a,
        identifier("STUDY", StudyInstanceUID=archive.study2, PatientName=""),
        PatientRootQueryRetrieveInformationModelFind,
    )
    assert [s for s, _, _ in answers] == [PENDING, 0x0000]
    assert answers[0][2].PatientName == "Müller^Jürgen"
