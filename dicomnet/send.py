"""Send a study or a series to one of the tenant's remote nodes: C-STORE as SCU, on a worker.

`send_job_create` checks what is asked and queues it; `send_job_run` (the task) resolves the
node once through the egress policy, opens one association with a presentation context per
SOP class and transfer syntax of the files (as C-MOVE does), stores the instances one by one
and keeps the counters current for the page. Each instance that does not arrive is listed
with the reason; warnings (B000, B006, B007) count as sent, as PS3.4 B.2.3 allows.
"""

import logging
import time
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from pydicom.dataset import Dataset

from audit.models import Outcome
from audit.services import audit_record
from configuration.models import RemoteNode
from dicomnet.queryretrieve import (
    MAX_RETRIEVE_INSTANCES,
    InstanceFile,
    instance_file,
    read_instance,
    storage_contexts,
)
from dicomnet.scu_jobs import node_association, run_queued
from studies.models import Instance, SendJob, SendJobStatus, Series, Study

logger = logging.getLogger(__name__)

SENT_STATUSES = {0x0000, 0xB000, 0xB006, 0xB007}
PROGRESS_SECONDS = 1.0
TIMEOUT_SECONDS = 30


def send_job_create(
    *, study: Study, node: RemoteNode, series: Series | None = None, request: HttpRequest
) -> SendJob:
    """Queue the sending of `study` (or one of its `series`) to `node`, a node of this
    tenant's; audited. The worker does the sending (`send_job_run`)."""
    from studies.tasks import send_to_node

    instances = _instances(study.study_instance_uid, series.series_instance_uid if series else "")
    total = instances.count()
    if not total:
        raise ValidationError("There is nothing to send: no instance is stored.")
    if total > MAX_RETRIEVE_INSTANCES:
        raise ValidationError(f"Over {MAX_RETRIEVE_INSTANCES} instances: send series one by one.")
    with transaction.atomic():
        job = SendJob.objects.create(
            node=node,
            destination=f"{node.ae_title}@{node.host}:{node.port}",
            study_instance_uid=study.study_instance_uid,
            series_instance_uid=series.series_instance_uid if series else "",
            description=str(study.patient_name or study.description)[:200],
            total=total,
            created_by=request.user if request.user.is_authenticated else None,
        )
        audit_record(
            action="study.send",
            request=request,
            target=job,
            details={
                "study": job.study_instance_uid,
                "series": job.series_instance_uid,
                "destination": job.destination,
                "instances": total,
            },
        )
        transaction.on_commit(lambda: send_to_node.delay(job.pk))
    return job


def _instances(study_uid: str, series_uid: str) -> Any:
    instances = Instance.objects.filter(series__study__study_instance_uid=study_uid)
    if series_uid:
        instances = instances.filter(series__series_instance_uid=series_uid)
    return instances.select_related("medium").order_by("series_id", "instance_number", "pk")


def _files(job: SendJob) -> list[InstanceFile]:
    instances = _instances(job.study_instance_uid, job.series_instance_uid)
    return [instance_file(instance) for instance in instances]


def send_job_run(job_id: int) -> SendJob:
    """Do the sending of a queued job (the task). Safe to call twice: only a queued job runs."""
    return run_queued(SendJob, job_id, work=_send, finish=_finish)


def _send(job: SendJob) -> None:
    files = _files(job) if job.node is not None else []
    job.total = len(files)
    assoc, error = node_association(job.node, storage_contexts(files), timeout=TIMEOUT_SECONDS)
    if assoc is None:
        _finish(job, error=error)
        return
    last = time.monotonic()
    try:
        for file in files:
            if not assoc.is_established:
                _failure(job, file, "the association was aborted")
                continue
            _store(assoc, job, file)
            if time.monotonic() - last >= PROGRESS_SECONDS:
                job.save(update_fields=["sent", "failed", "failures", "total"])
                last = time.monotonic()
    finally:
        if assoc.is_established:
            assoc.release()
    _finish(job)


def _store(assoc: Any, job: SendJob, file: InstanceFile) -> None:
    dataset: Dataset = read_instance(file)
    if "TransferSyntaxUID" not in getattr(dataset, "file_meta", Dataset()):
        _failure(job, file, "the stored file could not be read")
        return
    try:
        status = assoc.send_c_store(dataset)
    except (ValueError, RuntimeError) as error:  # no accepted context for its class/syntax
        _failure(job, file, str(error)[:200])
        return
    code = getattr(status, "Status", None)
    if code in SENT_STATUSES:
        job.sent += 1
    else:
        reason = "no answer" if code is None else f"status 0x{code:04X}"
        comment = getattr(status, "ErrorComment", "")
        _failure(job, file, f"{reason}{f': {comment}' if comment else ''}")


def _failure(job: SendJob, file: InstanceFile, reason: str) -> None:
    job.failed += 1
    if len(job.failures) < SendJob.MAX_FAILURES:
        job.failures.append({"sop_instance_uid": file.sop_instance_uid, "reason": reason})


def _finish(job: SendJob, *, error: str = "") -> None:
    job.error = error
    job.status = SendJobStatus.DONE if not error and not job.failed else SendJobStatus.FAILED
    job.finished_at = timezone.now()
    job.save()
    audit_record(
        action="study.send.finished",
        actor=job.created_by,
        target=job,
        outcome=Outcome.SUCCESS if job.status == SendJobStatus.DONE else Outcome.FAILURE,
        details={
            "destination": job.destination,
            "sent": job.sent,
            "failed": job.failed,
            **({"error": error} if error else {}),
        },
    )
