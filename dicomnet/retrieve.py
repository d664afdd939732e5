"""Pull a study from one of the tenant's remote nodes into this archive: C-MOVE as SCU.

The archive asks the node (as the tenant's calling AE title, through the egress policy) to
move the study to the tenant's own AE title. The node opens its own association to the
gateway and stores the instances there, so they arrive as every C-STORE does: received into
files with the size limit, checked, indexed with the identity rules, quota and duplicate
policy, each with its outcome in a gateway ingest job. Nothing the node sends is decoded in
the worker, which only follows the node's sub-operation counts for the job's page.

The node must know the tenant's AE title with the gateway's host and port (the settings
page's "Connect a modality" gives them); when it does not, it answers A801 and the job says
what to configure.
"""

import logging
import time
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from pydicom.dataset import Dataset
from pynetdicom import build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelMove,
)

from audit.models import Outcome
from audit.services import audit_record
from configuration.models import RemoteNode
from dicomnet.scu_jobs import node_association, run_queued
from portal.schemas import current_tenant
from studies.dicom import is_valid_uid
from studies.models import RetrieveJob, RetrieveJobStatus

logger = logging.getLogger(__name__)

MAX_STUDIES = 20  # asked at once from the query page
PENDING = 0xFF00
TIMEOUT_SECONDS = 120  # between two responses: the node stores an instance in between
DEADLINE_SECONDS = 3600  # for one study
PROGRESS_SECONDS = 1.0
MAX_COUNT = 10_000_000  # sub-operations believed from one node's answer (a study is less)
MAX_OPEN_PER_TENANT = 40  # retrievals queued or running at once, so one tenant cannot
# take every worker slot for hours
STATUS_REASONS = {
    0xA701: "the node is out of resources (it cannot count the matches)",
    0xA702: "the node is out of resources (it cannot perform the sub-operations)",
    0xA900: "the node says the request does not match the query model",
    0x0122: "the node does not support study-root retrieval (C-MOVE)",
    0xFE00: "the node cancelled the retrieval",
}


def retrieve_job_create(
    *, node: RemoteNode, study_instance_uid: str, description: str = "", request: HttpRequest
) -> RetrieveJob:
    """Queue the retrieval of one study from `node` (a node of this tenant's); audited.
    A retrieval of the same study from the same node that has not ended is returned instead
    of a second one."""
    from studies.tasks import retrieve_from_node

    if not is_valid_uid(study_instance_uid):
        raise ValidationError("That is not a Study Instance UID.")
    if not current_tenant().ae_title:
        raise ValidationError("This archive has no AE title yet: a node cannot send to it.")
    with transaction.atomic():
        # One request at a time per node decides whether a retrieval is already under way.
        RemoteNode.objects.select_for_update().filter(pk=node.pk).first()
        open_jobs = RetrieveJob.objects.filter(
            status__in=[RetrieveJobStatus.QUEUED, RetrieveJobStatus.RUNNING],
            # A job a killed worker left "running" past its deadline is not under way.
            created_at__gte=timezone.now() - timedelta(seconds=DEADLINE_SECONDS + 600),
        )
        running = open_jobs.filter(node=node, study_instance_uid=study_instance_uid).first()
        if running is not None:
            return running
        if open_jobs.count() >= MAX_OPEN_PER_TENANT:
            raise ValidationError(
                f"{MAX_OPEN_PER_TENANT} retrievals are under way already: let them finish first."
            )
        job = RetrieveJob.objects.create(
            node=node,
            source=f"{node.ae_title}@{node.host}:{node.port}",
            study_instance_uid=study_instance_uid,
            description=description[:200],
            created_by=request.user if request.user.is_authenticated else None,
        )
        audit_record(
            action="node.retrieve",
            request=request,
            target=job,
            details={"study": study_instance_uid, "source": job.source},
        )
        transaction.on_commit(lambda: retrieve_from_node.delay(job.pk))
    return job


def retrieve_job_run(job_id: int) -> RetrieveJob:
    """Do a queued retrieval (the task). Safe to call twice: only a queued job runs."""
    return run_queued(RetrieveJob, job_id, work=_retrieve, finish=_finish)


def _retrieve(job: RetrieveJob) -> None:
    node, tenant = job.node, current_tenant()
    contexts = [build_context(StudyRootQueryRetrieveInformationModelMove)]
    assoc, error = node_association(node, contexts, timeout=30, dimse_timeout=TIMEOUT_SECONDS)
    if assoc is None or node is None:
        _finish(job, error=error)
        return
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = job.study_instance_uid
    error = ""
    try:
        if not assoc.accepted_contexts:
            error = f"{node.ae_title} does not answer study-root retrievals (C-MOVE)."
        else:
            error = _follow(
                job,
                assoc.send_c_move(
                    identifier, str(tenant.ae_title), StudyRootQueryRetrieveInformationModelMove
                ),
                assoc,
                destination=str(tenant.ae_title),
            )
    finally:
        if assoc.is_established:
            assoc.release()
    _finish(job, error=error)


def _follow(job: RetrieveJob, responses: Any, assoc: Any, *, destination: str) -> str:
    """Follow the node's C-MOVE responses into the job's counters; the error, if any."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    last = time.monotonic()
    for status, _ in responses:
        code = getattr(status, "Status", None)
        if code is None:
            return "The node stopped answering."
        _count(job, status)
        if code == PENDING:
            if time.monotonic() > deadline:
                assoc.abort()
                return f"The node took over {DEADLINE_SECONDS // 60} minutes; stopped."
            if time.monotonic() - last >= PROGRESS_SECONDS:
                job.save(update_fields=["total", "completed", "warning", "failed"])
                last = time.monotonic()
            continue
        if code in (0x0000, 0xB000):
            return ""
        if code == 0xA801:
            return (
                f"The node does not know this archive's AE title {destination}: add it, with "
                "the gateway's host and port (Settings, Connect a modality), to the node's "
                "list of destinations."
            )
        reason = STATUS_REASONS.get(code, f"the node answered status 0x{code:04X}")
        comment = str(getattr(status, "ErrorComment", "") or "")[:200]
        return f"The retrieval failed: {reason}{f' ({comment})' if comment else ''}."
    return "The node ended the association without a final answer."


def _count(job: RetrieveJob, status: Dataset) -> None:
    def number(keyword: str) -> int | None:
        value = status.get(keyword)
        return int(value) if isinstance(value, int) and 0 <= value <= MAX_COUNT else None

    completed = number("NumberOfCompletedSuboperations")
    warning = number("NumberOfWarningSuboperations")
    failed = number("NumberOfFailedSuboperations")
    remaining = number("NumberOfRemainingSuboperations")
    job.completed = completed if completed is not None else job.completed
    job.warning = warning if warning is not None else job.warning
    job.failed = failed if failed is not None else job.failed
    # A node's numbers are its own: bounded, so the sum fits the job's columns whatever it says.
    job.total = min(MAX_COUNT, max(job.total, job.processed + (remaining or 0)))


def _finish(job: RetrieveJob, *, error: str = "") -> None:
    job.error = error
    ok = not error and not job.failed
    job.status = RetrieveJobStatus.DONE if ok else RetrieveJobStatus.FAILED
    job.finished_at = timezone.now()
    job.save()
    audit_record(
        action="node.retrieve.finished",
        actor=job.created_by,
        target=job,
        outcome=Outcome.SUCCESS if ok else Outcome.FAILURE,
        details={
            "source": job.source,
            "study": job.study_instance_uid,
            "completed": job.completed,
            "warning": job.warning,
            "failed": job.failed,
            **({"error": error} if error else {}),
        },
    )
