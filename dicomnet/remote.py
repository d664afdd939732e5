"""Query one of the tenant's remote nodes: C-FIND as SCU at the study level.

The archive calls as the tenant's AE title, through the egress policy (the name resolved
once and the checked address called), with timeouts, and keeps at most MAX_RESULTS answers
(the association is aborted past them). Every query is audited with the node, the keys
and the count.
"""

import time
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)

from audit.models import Outcome
from audit.services import audit_record
from configuration import egress
from configuration.models import RemoteNode
from configuration.selectors import calling_ae_title
from studies.models import Study
from tenants.models import Tenant

MAX_RESULTS = 200
TIMEOUT_SECONDS = 10  # per message
DEADLINE_SECONDS = 20  # for the whole query: a node trickling answers cannot hold the page
PENDING = (0xFF00, 0xFF01)
RETURNED = (
    "PatientName",
    "PatientID",
    "StudyDate",
    "StudyDescription",
    "AccessionNumber",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedInstances",
    "StudyInstanceUID",
)


@dataclass
class RemoteFind:
    node: RemoteNode
    studies: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    cut: bool = False  # more than MAX_RESULTS matched


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return ", ".join(str(v) for v in value)
    return str(value or "")[:200]


def remote_find(
    *,
    node: RemoteNode,
    tenant: Tenant,
    request: Any = None,
    patient_name: str = "",
    patient_id: str = "",
    date_from: date | None = None,
    date_to: date | None = None,
) -> RemoteFind:
    """The studies `node` says match; `error` says why there are none when it failed."""
    result = RemoteFind(node=node)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    for keyword in RETURNED:
        setattr(identifier, keyword, "")
    identifier.PatientName, identifier.PatientID = patient_name, patient_id
    if date_from or date_to:
        low = f"{date_from:%Y%m%d}" if date_from else ""
        high = f"{date_to:%Y%m%d}" if date_to else ""
        identifier.StudyDate = low if low == high else f"{low}-{high}"
    address, result.error = egress.checked_address(node.host, node.port)
    if address:
        _ask(result, address, identifier, calling_ae_title(tenant))
    audit_record(
        action="node.find",
        request=request,
        target=node,
        outcome=Outcome.FAILURE if result.error else Outcome.SUCCESS,
        details={
            "keys": {
                k: v
                for k, v in (
                    ("PatientName", patient_name),
                    ("PatientID", patient_id),
                    ("StudyDate", str(identifier.get("StudyDate", ""))),
                )
                if v
            },
            "matches": len(result.studies),
            **({"error": result.error} if result.error else {}),
        },
    )
    known = set(
        Study.objects.filter(
            study_instance_uid__in=[s["StudyInstanceUID"] for s in result.studies]
        ).values_list("study_instance_uid", flat=True)
    )
    for study in result.studies:
        study["in_archive"] = study["StudyInstanceUID"] in known
    return result


def _ask(result: RemoteFind, address: str, identifier: Dataset, calling_ae: str) -> None:
    node = result.node
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT_SECONDS
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate(address, node.port, ae_title=node.ae_title)
    if not assoc.is_established:
        result.error = f"{node.ae_title}@{node.host}:{node.port} " + (
            "rejected the association." if assoc.is_rejected else "did not answer."
        )
        return
    deadline = time.monotonic() + DEADLINE_SECONDS
    try:
        if not assoc.accepted_contexts:
            result.error = f"{node.ae_title} does not answer study-root queries (C-FIND)."
            return
        for status, answer in assoc.send_c_find(
            identifier, StudyRootQueryRetrieveInformationModelFind
        ):
            code = getattr(status, "Status", None)
            if code is None:
                result.error = result.error or "The node stopped answering."
                break
            if time.monotonic() > deadline:
                result.error = f"The node took over {DEADLINE_SECONDS} s; narrow the query."
                assoc.abort()
                break
            if code in PENDING and answer is not None:
                if len(result.studies) >= MAX_RESULTS:
                    result.cut = True  # enough: the association is aborted, not read on
                    assoc.abort()
                    break
                result.studies.append({k: _text(answer, k) for k in RETURNED})
            elif code not in PENDING and code != 0x0000:
                result.error = f"The node answered status 0x{code:04X}."
    finally:
        if assoc.is_established:
            assoc.release()
