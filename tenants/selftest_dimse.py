"""The DIMSE half of the tenant-boundary self-test (tenants/selftest.py).

A DICOM gateway is started in this process on a free port of 127.0.0.1 (the same code as
`manage.py dicom_gateway`; its associations run in threads with connections of their own, so
the tenants must be committed: inside a transaction this half is skipped and says so). Then
B's own modality, a node B lists, associates with B's AE title and asks for A's study, series
and instance by UID, for A's patient by ID, and for every patient: C-ECHO, C-FIND in both
information models at every level, C-GET and C-MOVE. It stores an instance that reuses A's
UIDs into B too, and asks A's AE title for A's study (B's node is not one of A's, so A must
not answer). A leak is any of A's markers or UIDs in an answer, any instance of A's sent, or
a retrieval of A's study that counted a sub-operation. The same questions about B's own
study must find it, so the probe is not blind.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import connection
from django_tenants.utils import schema_context
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from configuration.models import RemoteNode
from portal.management.commands.demo_seed import synthetic_instance

if TYPE_CHECKING:
    from tenants.selftest import SelftestReport, Side

CREDENTIAL = "B's DICOM node"
PENDING = (0xFF00, 0xFF01)
SUB_OPERATIONS = (
    "NumberOfCompletedSuboperations",
    "NumberOfFailedSuboperations",
    "NumberOfWarningSuboperations",
)


@dataclass
class Answers:
    """What one question brought back: identifiers, instances sent to us, sub-operations."""

    identifiers: list[Dataset] = field(default_factory=list)
    received: list[Dataset] = field(default_factory=list)
    sub_operations: int = 0
    accepted: bool = True

    def text(self) -> str:
        return " ".join(str(ds) for ds in [*self.identifiers, *self.received]).lower()


def probe_node_add(side: "Side") -> str:
    """List B's probing modality (this host) among B's nodes; returns its AE title."""
    title = f"PROBE{side.marker[-6:]}"[:16]
    with schema_context(side.tenant.schema_name):
        RemoteNode.objects.create(
            ae_title=title, host="127.0.0.1", port=104, description="self-test probe"
        )
    return title


def probe_dimse(report: "SelftestReport", attacker: "Side", victim: "Side") -> None:
    if connection.in_atomic_block:
        report.dimse = "not probed: run inside a transaction, which the gateway cannot see"
        return
    calling = probe_node_add(attacker)
    with _gateway() as port:
        peer = _Peer(calling, port)
        questions = _questions(victim)
        marks = [victim.marker.lower(), *(uid.lower() for uid in victim.uids)]
        # B's AE title about A's data; then A's title, asked by a node A does not list.
        asked = [(q, attacker.tenant.ae_title) for q in questions]
        for question, called in [*asked, (questions[1], victim.tenant.ae_title)]:
            answers = question.ask(peer, called)
            report.probes += 1
            text = answers.text()
            if any(mark in text for mark in marks):
                report.leaks.append(_leak(question.name, called, victim.marker))
            elif answers.sub_operations or answers.received:
                report.leaks.append(_leak(question.name, called, "sub-operations"))
        # A store into B that reuses A's UIDs lands in B (A's fingerprint shows otherwise).
        peer.store(attacker.tenant.ae_title, _instance_reusing(victim))
        report.probes += 1
        # Not blind: the same questions about B's own study find it.
        own = 0
        for question in _questions(attacker):
            found = question.ask(peer, attacker.tenant.ae_title)
            report.probes += 1
            own += bool(attacker.marker.lower() in found.text() or found.sub_operations)
        report.own[CREDENTIAL] = own
    report.dimse = f"{len(questions) * 2 + 2} DIMSE requests on port {port}"


def _leak(what: str, called: str, found: str) -> Any:
    from tenants.selftest import Leak

    return Leak("DIMSE", f"{what} to {called}", CREDENTIAL, found)


@contextmanager
def _gateway() -> Iterator[int]:
    from dicomnet.gateway import DicomGateway

    gateway = DicomGateway()
    server = gateway.start("127.0.0.1", 0)
    try:
        yield int(server.server_address[1])
    finally:
        gateway.stop(server, timeout=5.0)


def _refusable(send: Any, assoc: Any, answers: Answers) -> Iterator[tuple[Any, Any]]:
    """The responses, or none when the gateway declined the service's presentation context
    (a node the tenant does not let query)."""
    try:
        yield from send(assoc)
    except ValueError:  # pynetdicom: no accepted context for this SOP class
        answers.accepted = False


class _Peer:
    """B's modality: one association per question, as a real one often does."""

    def __init__(self, calling: str, port: int) -> None:
        self.calling, self.port = calling, port

    def ask(self, called: str, sop_class: str, send: Any) -> Answers:
        answers = Answers()

        def stored(event: Any) -> int:
            answers.received.append(event.dataset)
            return 0x0000

        ae = AE(ae_title=self.calling)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        for context in (
            Verification,
            StudyRootQueryRetrieveInformationModelFind,
            PatientRootQueryRetrieveInformationModelFind,
            StudyRootQueryRetrieveInformationModelGet,
            StudyRootQueryRetrieveInformationModelMove,
            CTImageStorage,
        ):
            ae.add_requested_context(context)
        assoc = ae.associate(
            "127.0.0.1",
            self.port,
            ae_title=called,
            ext_neg=[build_role(CTImageStorage, scu_role=True, scp_role=True)],
            evt_handlers=[(evt.EVT_C_STORE, stored)],
        )
        if not assoc.is_established:
            answers.accepted = False
            return answers
        if not any(c.abstract_syntax == sop_class for c in assoc.accepted_contexts):
            # The tenant declined the service (a node it does not let query): nothing sent.
            answers.accepted = False
            assoc.release()
            return answers
        try:
            for status, identifier in send(assoc):
                if status is None:
                    break
                if status.Status in PENDING and identifier is not None:
                    answers.identifiers.append(identifier)
                answers.sub_operations = max(
                    answers.sub_operations,
                    sum(int(getattr(status, key, 0) or 0) for key in SUB_OPERATIONS),
                )
        finally:
            assoc.release()
        return answers

    def store(self, called: str, dataset: Dataset) -> None:
        self.ask(called, CTImageStorage, lambda assoc: iter([(assoc.send_c_store(dataset), None)]))


def _identifier(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDescription"):
        setattr(ds, keyword, "")
    if level in ("SERIES", "IMAGE"):
        ds.SeriesInstanceUID, ds.SeriesDescription = "", ""
    if level == "IMAGE":
        ds.SOPInstanceUID = ""
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


@dataclass(frozen=True)
class Question:
    """One DIMSE request about a side's data: its name, SOP class and identifier."""

    name: str
    sop_class: str
    identifier: Dataset | None = None

    def ask(self, peer: "_Peer", called: str) -> Answers:
        model, identifier = self.sop_class, self.identifier

        def send(assoc: Any) -> Any:
            if model == Verification:
                return iter([(assoc.send_c_echo(), None)])
            if model == StudyRootQueryRetrieveInformationModelGet:
                return assoc.send_c_get(identifier, model)
            if model == StudyRootQueryRetrieveInformationModelMove:
                return assoc.send_c_move(identifier, peer.calling, model)
            return assoc.send_c_find(identifier, model)

        return peer.ask(called, model, send)


def _at(level: str, side: "Side") -> Dataset:
    """A query for `side`'s study, or its series or instance, by UID at `level`."""
    study, series, instance = side.uids
    keys = {"StudyInstanceUID": study}
    if level in ("SERIES", "IMAGE"):
        keys["SeriesInstanceUID"] = series
    if level == "IMAGE":
        keys["SOPInstanceUID"] = instance
    return _identifier(level, **keys)


def _questions(side: "Side") -> list[Question]:
    """Every question about `side`'s data."""
    study_root = StudyRootQueryRetrieveInformationModelFind
    by_patient = _identifier("PATIENT", PatientID=side.marker)
    del by_patient.StudyInstanceUID, by_patient.StudyDescription
    everyone = _identifier("STUDY", PatientName="*")
    del everyone.StudyInstanceUID
    retrieve = _identifier("STUDY", StudyInstanceUID=side.uids[0])
    return [
        Question("C-ECHO", Verification),
        Question("C-FIND study", study_root, _at("STUDY", side)),
        Question("C-FIND series", study_root, _at("SERIES", side)),
        Question("C-FIND image", study_root, _at("IMAGE", side)),
        Question("C-FIND patient", PatientRootQueryRetrieveInformationModelFind, by_patient),
        Question("C-FIND every study", study_root, everyone),
        Question("C-GET study", StudyRootQueryRetrieveInformationModelGet, retrieve),
        Question("C-MOVE study", StudyRootQueryRetrieveInformationModelMove, retrieve),
    ]


def _instance_reusing(victim: "Side") -> Dataset:
    from io import BytesIO

    from pydicom import dcmread

    study, series, instance = victim.uids
    ds = Dataset()
    ds.PatientName, ds.PatientID = "SELFTEST^REUSED", "REUSED"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study, series, "CT"
    series_ds = Dataset()
    series_ds.Modality, series_ds.SeriesInstanceUID = "CT", series
    series_ds.SeriesNumber = 1
    stored = dcmread(BytesIO(synthetic_instance(ds, "CT", series_ds, 1)))
    stored.SOPInstanceUID = instance
    stored.file_meta.MediaStorageSOPInstanceUID = UID(instance)
    return stored
