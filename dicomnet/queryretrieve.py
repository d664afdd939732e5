"""Query/Retrieve (PS3.4 Annex C) for the gateway: C-FIND, C-MOVE and C-GET against the index.

An identifier becomes an `IndexQuery` (studies/index/query.py, shared with QIDO-RS), so matching
follows PS3.4 C.2.2.2 there. Each request runs in three steps: translate the identifier (pure,
no database), read every row or file path it needs inside the tenant's schema and write the
audit row (one short `tenant_context`, left before anything is yielded), then hand pynetdicom
a generator that yields responses or datasets read from those paths and touches no database.
The generator never holds a schema across yields, so however pynetdicom abandons it (cancel,
abort), no other thread's connection can be reset by its clean-up.

Where the standard is strict and a lenient answer harms no one, the SCP is lenient:

* Unique keys of the levels above the query level (PS3.4 C.4.1.3.1) restrict when present but
  are not required; other keys of higher levels that the index holds are matched as well.
  Relational queries are not negotiated, but an identifier a relational SCP would take is
  answered the same way.
* Keys the index does not hold, of lower levels, sequences and private attributes are
  returned zero-length; when such a key carried a value that could not be matched, the
  pending responses say so with 0xFF01 (C.4.1.1.4, Table C.4-1).
* A retrieve needs the unique key of its level (PatientID, StudyInstanceUID,
  SeriesInstanceUID or SOPInstanceUID, single value or UID list); higher unique keys
  restrict when present, keys below the level and non-unique keys are ignored.
"""

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from django_tenants.utils import tenant_context
from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from audit.models import Outcome
from audit.services import audit_record
from configuration import egress
from configuration.models import RemoteNode
from dicomnet.status import status_dataset
from portal.schemas import current_tenant
from studies.index.query import (
    BY_TAG,
    LEVEL_ORDER,
    PATIENT_COUNTS,
    Attribute,
    IndexQuery,
    Level,
    QueryError,
    dicom_value,
)
from studies.storage import StoragePathError, instance_path
from tenants.models import Tenant

logger = logging.getLogger(__name__)

# The most C-FIND matches one request gets; beyond it the pending responses stop there and
# the final response is 0xA700 (out of resources) saying so. Bounds memory and time per query.
MAX_FIND_MATCHES = 10_000
# The Number of ... Sub-operations elements are US (PS3.4 C.4.2.1.6), so a C-MOVE or C-GET
# cannot announce more than this many instances.
MAX_RETRIEVE_INSTANCES = 65_535
# A-ASSOCIATE-RQ limit on proposed presentation contexts (PS3.8 9.3.2).
MAX_PROPOSED_CONTEXTS = 128

# Statuses of PS3.4 C.4.1.1.4 (C-FIND), C.4.2.1.5 (C-MOVE) and C.4.3.1.4 (C-GET).
PENDING = 0xFF00
PENDING_KEYS_UNSUPPORTED = 0xFF01
CANCELLED = 0xFE00
FIND_OUT_OF_RESOURCES = 0xA700
RETRIEVE_OUT_OF_RESOURCES = 0xA701  # unable to calculate the number of matches
MOVE_DESTINATION_UNKNOWN = 0xA801
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
UNABLE_TO_PROCESS = 0xC000

RESPONSE_CHARACTER_SET = "ISO_IR 192"  # the index holds unicode text
AUDIT_VALUE_LENGTH = 200


class Root(StrEnum):
    PATIENT = "patient"
    STUDY = "study"


class Operation(StrEnum):
    FIND = "find"
    MOVE = "move"
    GET = "get"


SOP_CLASSES: dict[str, tuple[Root, Operation]] = {
    str(PatientRootQueryRetrieveInformationModelFind): (Root.PATIENT, Operation.FIND),
    str(PatientRootQueryRetrieveInformationModelMove): (Root.PATIENT, Operation.MOVE),
    str(PatientRootQueryRetrieveInformationModelGet): (Root.PATIENT, Operation.GET),
    str(StudyRootQueryRetrieveInformationModelFind): (Root.STUDY, Operation.FIND),
    str(StudyRootQueryRetrieveInformationModelMove): (Root.STUDY, Operation.MOVE),
    str(StudyRootQueryRetrieveInformationModelGet): (Root.STUDY, Operation.GET),
}
LEVELS: dict[Root, tuple[Level, ...]] = {
    Root.PATIENT: (Level.PATIENT, Level.STUDY, Level.SERIES, Level.INSTANCE),
    Root.STUDY: (Level.STUDY, Level.SERIES, Level.INSTANCE),
}
UNIQUE_KEYS: dict[Level, str] = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.INSTANCE: "SOPInstanceUID",
}
# Elements that say how to read the identifier or what it asks, not attributes to return.
QUERY_RETRIEVE_LEVEL = 0x00080052
NOT_KEYS = frozenset({0x00080005, QUERY_RETRIEVE_LEVEL, 0x00080054})  # charset, level, AE
# Values that cannot be matched as text: they are returned zero-length, never matched.
UNMATCHABLE_VRS = frozenset({"SQ", "OB", "OD", "OF", "OL", "OV", "OW", "UN"})

FindResponse = tuple[int | Dataset, Dataset | None]


class IdentifierError(Exception):
    """An identifier the SCP refuses: the status to answer with and an ErrorComment."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment


# -- identifiers (pure) -----------------------------------------------------------------------


@dataclass(frozen=True)
class RequestedKey:
    """One attribute the identifier asks for, and where its answer comes from.

    `attribute` is the index column; `count` a patient count; neither: returned zero-length.
    """

    tag: int
    keyword: str
    vr: str
    attribute: Attribute | None = None
    count: str | None = None


@dataclass
class FindRequest:
    root: Root
    level: Level
    query: IndexQuery
    keys: list[RequestedKey]
    asked: dict[str, str] = field(default_factory=dict)  # keyword -> value, for the audit
    # Keys with a value the index cannot match: answered as universal matches, with 0xFF01.
    unmatched: list[str] = field(default_factory=list)

    @property
    def pending_status(self) -> int:
        return PENDING_KEYS_UNSUPPORTED if self.unmatched else PENDING

    def response(self, row: dict[str, Any], *, retrieve_ae: str) -> Dataset:
        """The identifier of one pending response: exactly the requested keys (C.4.1.1.3.2)."""
        answer = Dataset()
        answer.SpecificCharacterSet = RESPONSE_CHARACTER_SET
        answer.QueryRetrieveLevel = self.level.value
        answer.RetrieveAETitle = retrieve_ae
        for key in self.keys:
            if key.count is not None:
                answer.add_new(key.tag, "IS", int(row[key.count]))
            elif key.attribute is None:
                answer.add_new(key.tag, key.vr, [] if key.vr == "SQ" else None)
            else:
                values = dicom_value(key.attribute, row[key.attribute.columns[self.level]])
                answer.add_new(key.tag, key.vr, values[0] if len(values) == 1 else values or None)
        return answer


@dataclass
class RetrieveRequest:
    root: Root
    level: Level
    query: IndexQuery  # at the instance level: the instances to send
    keys: dict[str, str]


def sop_class_model(sop_class_uid: str) -> tuple[Root, Operation]:
    return SOP_CLASSES[str(sop_class_uid)]


def query_level(identifier: Dataset, root: Root) -> Level:
    """The identifier's QueryRetrieveLevel, if it is one of `root`'s (else 0xA900)."""
    element = identifier.get(QUERY_RETRIEVE_LEVEL)
    value = element.value if element is not None else None
    text = str(value or "").strip().upper()
    allowed = LEVELS[root]
    names = ", ".join(level.value for level in allowed)
    if not text:
        raise IdentifierError(IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, "QueryRetrieveLevel missing")
    try:
        level = Level(text)
    except ValueError:
        raise IdentifierError(
            IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, f"QueryRetrieveLevel {text[:16]} not {names}"
        ) from None
    if level not in allowed:
        raise IdentifierError(
            IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, f"{level.value} is no level of the {root} root"
        )
    return level


def element_text(element: DataElement) -> str | None:
    """A key's value as the text IndexQuery matches (`\\` between values); None: unmatchable."""
    if element.VR in UNMATCHABLE_VRS:
        return None
    value = element.value
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return None
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(item).strip() for item in value)
    return str(value).strip()


def response_vr(element: DataElement) -> str:
    """The dictionary's VR for a tag, or the request's where the dictionary has none or several."""
    try:
        vr = str(dictionary_VR(element.tag))
    except KeyError:
        return str(element.VR)
    return vr if " or " not in vr else str(element.VR)


def find_request(identifier: Dataset, root: Root) -> FindRequest:
    """An identifier as an index query; IdentifierError for one that cannot be run."""
    try:
        return _find_request(identifier, root)
    except IdentifierError:
        raise
    except Exception as error:  # pydicom decodes lazily: a broken identifier fails here
        logger.info("C-FIND identifier could not be read: %s", error)
        raise IdentifierError(UNABLE_TO_PROCESS, "The identifier could not be decoded") from None


def _find_request(identifier: Dataset, root: Root) -> FindRequest:
    level = query_level(identifier, root)
    query = IndexQuery(level=level)
    request = FindRequest(root=root, level=level, query=query, keys=[])
    for element in identifier:
        tag = int(element.tag)
        if tag in NOT_KEYS or element.tag.element == 0:  # group lengths say nothing
            continue
        keyword = element.keyword or f"{tag:08X}"
        value = element_text(element)
        request.asked[keyword] = value or ""
        attribute = BY_TAG.get(tag)
        if level == Level.PATIENT and keyword in PATIENT_COUNTS:
            query.add_return(keyword)
            request.keys.append(RequestedKey(tag, keyword, "IS", count=PATIENT_COUNTS[keyword]))
            if value:
                request.unmatched.append(keyword)
            continue
        if attribute is None or level not in attribute.columns or value is None:
            request.keys.append(RequestedKey(tag, keyword, response_vr(element)))
            if value:
                request.unmatched.append(keyword)
            continue
        if value and not attribute.matchable:
            request.unmatched.append(keyword)
            value = ""
        query.add_match(attribute.keyword, value)
        request.keys.append(RequestedKey(tag, keyword, attribute.vr, attribute=attribute))
    _validate(query)
    return request


def retrieve_request(identifier: Dataset, root: Root) -> RetrieveRequest:
    """The instances a C-MOVE or C-GET identifier names (C.4.2.2.1, C.4.3.2.1)."""
    try:
        return _retrieve_request(identifier, root)
    except IdentifierError:
        raise
    except Exception as error:
        logger.info("retrieve identifier could not be read: %s", error)
        raise IdentifierError(UNABLE_TO_PROCESS, "The identifier could not be decoded") from None


def _retrieve_request(identifier: Dataset, root: Root) -> RetrieveRequest:
    level = query_level(identifier, root)
    query = IndexQuery(level=Level.INSTANCE)
    keys: dict[str, str] = {}
    for key_level in LEVEL_ORDER[: LEVEL_ORDER.index(level) + 1]:
        if key_level not in LEVELS[root]:
            continue
        keyword = UNIQUE_KEYS[key_level]
        element = identifier.get(Tag(keyword))  # a tag gets the element, a keyword its value
        value = (element_text(element) or "") if element is not None else ""
        if not value:
            if key_level == level:
                raise IdentifierError(
                    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, f"A {level.value} retrieve needs {keyword}"
                )
            continue
        if "*" in value or "?" in value:
            raise IdentifierError(UNABLE_TO_PROCESS, f"{keyword}: no wildcards in a retrieve")
        query.add_match(keyword, value)
        keys[keyword] = value
    _validate(query)
    return RetrieveRequest(root=root, level=level, query=query, keys=keys)


def _validate(query: IndexQuery) -> None:
    """Builds the queryset, which parses every value (dates, UIDs), without running it."""
    try:
        query.queryset()
    except QueryError as error:
        raise IdentifierError(UNABLE_TO_PROCESS, str(error)) from None


def audit_keys(identifier_keys: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {keyword: value[:AUDIT_VALUE_LENGTH] for keyword, value in identifier_keys}


# -- C-FIND -----------------------------------------------------------------------------------


def find(
    *,
    tenant: Tenant,
    peer: str,
    sop_class_uid: str,
    identifier: Dataset,
    is_cancelled: Callable[[], bool],
) -> Iterator[FindResponse]:
    """The C-FIND responses for one request to `tenant`, read from its schema only."""
    root, _ = sop_class_model(sop_class_uid)
    try:
        request = find_request(identifier, root)
    except IdentifierError as refusal:
        with tenant_context(tenant):
            _audit_refusal(Operation.FIND, peer=peer, root=root, refusal=refusal)
        return iter([(status_dataset(refusal.status, refusal.comment), None)])
    with tenant_context(tenant):
        rows = list(request.query.rows(limit=MAX_FIND_MATCHES + 1))
        audit_record(
            action="dimse.find",
            actor_name=peer,
            object_type=request.level.name.lower(),
            object_id=_unique_value(request.level, request.query),
            details={
                "root": root.value,
                "level": request.level.value,
                "keys": audit_keys(request.asked.items()),
                "matches": min(len(rows), MAX_FIND_MATCHES),
                "truncated": len(rows) > MAX_FIND_MATCHES,
            },
        )
    return _find_responses(request, rows, retrieve_ae=str(tenant.ae_title), cancelled=is_cancelled)


def _find_responses(
    request: FindRequest,
    rows: list[dict[str, Any]],
    *,
    retrieve_ae: str,
    cancelled: Callable[[], bool],
) -> Iterator[FindResponse]:
    for row in rows[:MAX_FIND_MATCHES]:
        if cancelled():
            yield CANCELLED, None
            return
        yield request.pending_status, request.response(row, retrieve_ae=retrieve_ae)
    if len(rows) > MAX_FIND_MATCHES:
        comment = f"Over {MAX_FIND_MATCHES} matches; narrow the query"
        yield status_dataset(FIND_OUT_OF_RESOURCES, comment), None


def _unique_value(level: Level, query: IndexQuery) -> str:
    keyword = UNIQUE_KEYS[level]
    for attribute, value in query.matches:
        if attribute.keyword == keyword:
            return value[:128]
    return ""


# -- C-MOVE and C-GET -------------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceFile:
    """One instance to send: what the index says it is, and its row (with its medium); the
    file is found, or fetched from object storage, only when it is read."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    row: Any
    tenant: Any  # whose schema and storage the row belongs to

    def path(self) -> Path | None:
        """A local file with the instance's bytes; None when the index points outside its
        medium (never read) or the medium does not give the file now. Called as pynetdicom
        asks for the dataset, outside the handler's schema: it enters the row's own."""
        try:
            with tenant_context(self.tenant):
                return instance_path(self.row)
        except StoragePathError:
            logger.error("instance %s points outside its medium", self.sop_instance_uid)
        except OSError as error:
            logger.error("instance %s is unavailable: %s", self.sop_instance_uid, error)
        return None


def instance_file(instance: Any) -> InstanceFile:
    """What to send of an indexed instance (a row with its medium)."""
    return InstanceFile(
        sop_class_uid=instance.sop_class_uid,
        sop_instance_uid=instance.sop_instance_uid,
        transfer_syntax_uid=instance.transfer_syntax_uid,
        row=instance,
        tenant=current_tenant(),
    )


def instance_files(query: IndexQuery) -> list[InstanceFile]:
    """The matched instances of the active schema with their paths (at most the limit + 1)."""
    instances = query.queryset().select_related("medium")[: MAX_RETRIEVE_INSTANCES + 1]
    return [instance_file(instance) for instance in instances]


def move_destination(ae_title: str) -> RemoteNode | None:
    """The active tenant's node with AE title `ae_title` (the first, if several share it)."""
    ae_title = ae_title.strip()
    if not ae_title:
        return None
    return RemoteNode.objects.filter(ae_title=ae_title).order_by("host", "port", "pk").first()


def storage_contexts(files: Iterable[InstanceFile]) -> list[PresentationContext]:
    """What to propose to a move destination: each SOP class in the files' transfer syntaxes.

    Native little endian files can go in either little endian syntax (pynetdicom re-encodes
    them); anything else (compressed, big endian) only as stored, so in a context of its own.
    """
    wanted: dict[tuple[str, str], list[str]] = {}
    for file in files:
        syntax = UID(file.transfer_syntax_uid)
        native = syntax.is_transfer_syntax and not syntax.is_compressed and syntax.is_little_endian
        key = (file.sop_class_uid, "native" if native else str(syntax))
        syntaxes = wanted.setdefault(
            key, [ExplicitVRLittleEndian, ImplicitVRLittleEndian] if native else []
        )
        if str(syntax) not in syntaxes:
            syntaxes.append(str(syntax))
    contexts = [build_context(sop_class, syntaxes) for (sop_class, _), syntaxes in wanted.items()]
    if len(contexts) > MAX_PROPOSED_CONTEXTS:
        # The instances of the classes left out fail as sub-operations; the rest are sent.
        logger.warning("C-MOVE needs %d presentation contexts, proposing 128", len(contexts))
    return contexts[:MAX_PROPOSED_CONTEXTS]


def move(
    *,
    tenant: Tenant,
    peer: str,
    sop_class_uid: str,
    identifier: Dataset,
    destination_ae: str,
    is_cancelled: Callable[[], bool],
) -> Iterator[Any]:
    """The C-MOVE handler's yields (pynetdicom's contract): destination, count, datasets.

    The destination must be one of the tenant's remote nodes; the files are the tenant's.
    """
    root, _ = sop_class_model(sop_class_uid)
    with tenant_context(tenant):
        node = move_destination(destination_ae)
        if node is None:
            audit_record(
                action="dimse.move",
                actor_name=peer,
                outcome=Outcome.DENIED,
                details={"root": root.value, "destination": destination_ae[:16]},
            )
            return iter([(None, None)])  # pynetdicom answers 0xA801
        destination = f"{node.ae_title}@{node.host}:{node.port}"
        try:
            # Resolved once and checked; the association goes to this address.
            address = egress.resolve(node.host, node.port)
        except (egress.AddressRefused, OSError, UnicodeError) as problem:
            refused = isinstance(problem, egress.AddressRefused)
            audit_record(
                action="dimse.move",
                actor_name=peer,
                outcome=Outcome.DENIED,
                details={
                    "root": root.value,
                    "destination": destination,
                    "reason": "address refused by the egress policy"
                    if refused
                    else "destination host does not resolve",
                },
            )
            return iter([(None, None)])  # 0xA801: the destination cannot be reached
        try:
            request = retrieve_request(identifier, root)
            files = instance_files(request.query)
            _check_count(files)
        except IdentifierError as refusal:
            _audit_refusal(Operation.MOVE, peer=peer, root=root, refusal=refusal, to=destination)
            # The status can only follow an association with the destination: pynetdicom
            # opens it after a non-zero count. Verification is enough to open it.
            return iter(
                [
                    (address, node.port, {"contexts": [build_context(Verification)]}),
                    1,
                    (status_dataset(refusal.status, refusal.comment), None),
                ]
            )
        _audit_retrieve(Operation.MOVE, peer=peer, request=request, files=files, to=destination)
    return _sent(
        files,
        first=[(address, node.port, {"contexts": storage_contexts(files)}), len(files)],
        cancelled=is_cancelled,
    )


def get(
    *,
    tenant: Tenant,
    peer: str,
    sop_class_uid: str,
    identifier: Dataset,
    is_cancelled: Callable[[], bool],
) -> Iterator[Any]:
    """The C-GET handler's yields: the count, then the datasets sent back over the association.

    pynetdicom sends each on a storage context the requestor proposed with the SCP role; an
    instance without one fails as a sub-operation (C.4.3.3), the others are sent.
    """
    root, _ = sop_class_model(sop_class_uid)
    with tenant_context(tenant):
        try:
            request = retrieve_request(identifier, root)
            files = instance_files(request.query)
            _check_count(files)
        except IdentifierError as refusal:
            _audit_refusal(Operation.GET, peer=peer, root=root, refusal=refusal)
            # pynetdicom answers a zero count with success, so a refusal announces one.
            return iter([1, (status_dataset(refusal.status, refusal.comment), None)])
        _audit_retrieve(Operation.GET, peer=peer, request=request, files=files)
    return _sent(files, first=[len(files)], cancelled=is_cancelled)


def _check_count(files: list[InstanceFile]) -> None:
    if len(files) > MAX_RETRIEVE_INSTANCES:
        raise IdentifierError(
            RETRIEVE_OUT_OF_RESOURCES, f"Over {MAX_RETRIEVE_INSTANCES} instances; retrieve fewer"
        )


def _sent(
    files: list[InstanceFile], *, first: list[Any], cancelled: Callable[[], bool]
) -> Iterator[Any]:
    """The handler's remaining yields; files are read one at a time, as pynetdicom asks."""
    yield from first
    for file in files:
        if cancelled():
            yield CANCELLED, None
            return
        yield PENDING, read_instance(file)


def read_instance(file: InstanceFile) -> Dataset:
    """The stored dataset, or, if the file is unreadable or not the indexed instance, a
    stand-in without file meta: pynetdicom cannot send that, so it counts the sub-operation
    as failed and lists the SOP Instance UID in the Failed SOP Instance UID List."""
    path = file.path()
    if path is not None:
        try:
            dataset = dcmread(path)
        except Exception:
            logger.exception("stored file of %s cannot be read", file.sop_instance_uid)
        else:
            if str(dataset.get("SOPInstanceUID", "")) == file.sop_instance_uid:
                return dataset
            logger.error("stored file %s is not instance %s", path, file.sop_instance_uid)
    stand_in = Dataset()
    stand_in.SOPClassUID = file.sop_class_uid
    stand_in.SOPInstanceUID = file.sop_instance_uid
    return stand_in


def _audit_retrieve(
    operation: Operation,
    *,
    peer: str,
    request: RetrieveRequest,
    files: list[InstanceFile],
    to: str = "",
) -> None:
    details: dict[str, Any] = {
        "root": request.root.value,
        "level": request.level.value,
        "keys": audit_keys(request.keys.items()),
        "instances": len(files),
    }
    if to:
        details["destination"] = to
    audit_record(
        action=f"dimse.{operation}",
        actor_name=peer,
        object_type=request.level.name.lower(),
        object_id=request.keys.get(UNIQUE_KEYS[request.level], "")[:128],
        details=details,
    )


def _audit_refusal(
    operation: Operation, *, peer: str, root: Root, refusal: IdentifierError, to: str = ""
) -> None:
    details: dict[str, Any] = {
        "root": root.value,
        "status": f"0x{refusal.status:04X}",
        "reason": refusal.comment,
    }
    if to:
        details["destination"] = to
    audit_record(
        action=f"dimse.{operation}", actor_name=peer, outcome=Outcome.FAILURE, details=details
    )
