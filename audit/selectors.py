"""Reading the audit log: the filters the page, the CSV export and the API share."""

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.db.models import QuerySet
from django.utils import timezone

from audit.actions import KNOWN_ACTIONS
from audit.models import AuditEvent


@dataclass(frozen=True)
class AuditFilter:
    since: date | None = None
    until: date | None = None
    actor: str = ""
    action: str = ""
    object_type: str = ""
    object_id: str = ""
    outcome: str = ""


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def audit_search(criteria: AuditFilter) -> QuerySet[AuditEvent]:
    """Events matching every given criterion, newest first. `until` includes that whole day."""
    events = AuditEvent.objects.all()
    if criteria.since:
        events = events.filter(at__gte=_day_start(criteria.since))
    if criteria.until:
        events = events.filter(at__lt=_day_start(criteria.until) + timedelta(days=1))
    if criteria.actor:
        events = events.filter(actor_name__iexact=criteria.actor)
    if criteria.action:
        # "user" finds "user.invite", "user.deactivate", ...; "user.invite" only itself.
        events = events.filter(action__startswith=criteria.action)
    if criteria.object_type:
        events = events.filter(object_type=criteria.object_type)
    if criteria.object_id:
        events = events.filter(object_id=criteria.object_id)
    if criteria.outcome:
        events = events.filter(outcome=criteria.outcome)
    return events.order_by("-at", "-id")


def audit_actions() -> list[str]:
    """The actions the log can hold (audit/actions.py), for the filter's suggestions: a
    list kept with the code, not a DISTINCT over a log of millions of rows."""
    return list(KNOWN_ACTIONS)
