"""What the archive's jobs as a DICOM SCU share: a queued job runs once and always ends, and
its association goes to the node through the egress policy."""

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import models, transaction
from pynetdicom import AE

from configuration import egress
from configuration.selectors import calling_ae_title
from portal.schemas import current_tenant

logger = logging.getLogger(__name__)

Job = TypeVar("Job", bound=models.Model)


def run_queued(
    model: type[Job], job_id: int, *, work: Callable[[Job], None], finish: Callable[..., Any]
) -> Job:
    """Claim the job if it is still queued (a redelivered task finds it claimed and does
    nothing), do `work`, and end it with `finish(job, error=...)` if `work` raised."""
    with transaction.atomic():
        job = model._default_manager.select_for_update().get(pk=job_id)
        if getattr(job, "status") != "queued":  # noqa: B009 (both status enums spell it so)
            return job
        job.status = "running"  # type: ignore[attr-defined]
        job.save(update_fields=["status"])
    try:
        work(job)
    except Exception as error:  # the job must end, whatever happened
        logger.exception("%s failed", job)
        finish(job, error=f"{type(error).__name__}: {error}")
    return job


def node_association(
    node: Any, contexts: list[Any], *, timeout: float, dimse_timeout: float | None = None
) -> tuple[Any, str]:
    """An established association to one of the tenant's remote nodes, as the tenant's
    calling AE title, to the address the egress policy checked; or (None, why not)."""
    if node is None:
        return None, "The remote node was deleted before the job ran."
    address, refused = egress.checked_address(node.host, node.port)
    if refused:
        return None, refused
    ae = AE(ae_title=calling_ae_title(current_tenant()))
    ae.acse_timeout = ae.network_timeout = timeout
    ae.dimse_timeout = dimse_timeout if dimse_timeout is not None else timeout
    ae.requested_contexts = contexts
    assoc = ae.associate(address, node.port, ae_title=node.ae_title)
    if not assoc.is_established:
        reason = "rejected the association" if assoc.is_rejected else "did not answer"
        return None, f"{node.ae_title}@{node.host}:{node.port} {reason}."
    return assoc, ""
