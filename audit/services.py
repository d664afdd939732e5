"""Writing audit rows; every service that changes something calls `audit_record` inside its
transaction, so the change and its audit row commit or vanish together."""

from typing import Any

from django.db import models
from django.http import HttpRequest

from audit.models import AuditEvent, Outcome


def audit_record(
    *,
    action: str,
    request: HttpRequest | None = None,
    actor: Any = None,
    actor_name: str = "",
    target: models.Model | None = None,
    object_type: str = "",
    object_id: str | int = "",
    outcome: str = Outcome.SUCCESS,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one row. `actor` defaults to the request's user; `target` fills the object."""
    from portal.routing import client_address

    if actor is None and request is not None and request.user.is_authenticated:
        actor = request.user
    if target is not None:
        object_type = object_type or target._meta.model_name or ""
        object_id = object_id or str(target.pk)
    return AuditEvent.objects.create(
        action=action,
        actor=actor if getattr(actor, "pk", None) else None,
        actor_name=actor_name or (actor.get_username() if actor is not None else ""),
        source_address=client_address(request) or None if request is not None else None,
        object_type=object_type,
        object_id=str(object_id),
        outcome=outcome,
        details=details or {},
    )
