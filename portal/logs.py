"""Log context: a request id per request or task, the active tenant, and a JSON formatter.

The request id and task name live in context variables, so concurrent requests (threads) and
tasks never see each other's. The tenant is read from the connection's active schema when the
line is written: a request after routing, a tenant task (tenant-schemas-celery) and a DICOM
association inside `tenant_context` all carry their tenant without any extra call.
"""

import json
import logging
import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

from celery.signals import task_postrun, task_prerun
from django.core.signals import request_finished
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

request_id_var: ContextVar[str] = ContextVar("portal_request_id", default="-")
task_name_var: ContextVar[str | None] = ContextVar("portal_task_name", default=None)


def new_request_id(proposed: str | None = None) -> str:
    """The caller's id when it is a sane token, else a fresh one (ids end up in log queries)."""
    if proposed and REQUEST_ID_RE.match(proposed):
        return proposed
    return uuid.uuid4().hex


def active_tenant() -> str:
    """The slug of the active schema's tenant, `public`, or `-` when there is no connection."""
    try:
        from django.db import connection

        schema = getattr(connection, "schema_name", None)
        tenant = getattr(connection, "tenant", None)
    except Exception:  # settings not configured yet: logging must never fail
        return "-"
    if not schema:
        return "-"
    if schema == "public":
        return "public"
    slug = getattr(tenant, "slug", None)  # schema_context() sets a stand-in without a slug
    # Schemas are `t_<slug with _>` and slugs never contain `_` (tenants/validators.py).
    return str(slug) if slug else schema.removeprefix("t_").replace("_", "-")


class ContextFilter(logging.Filter):
    """Puts `tenant`, `request_id` and `task` on every record the handler writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.tenant = active_tenant()
        record.request_id = request_id_var.get()
        record.task = task_name_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, tenant, request_id, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "tenant": getattr(record, "tenant", None) or active_tenant(),
            "request_id": getattr(record, "request_id", None) or request_id_var.get(),
        }
        task = getattr(record, "task", None) or task_name_var.get()
        if task:
            entry["task"] = task
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class RequestIdMiddleware:
    """First middleware: gives the request its id (echoed in X-Request-ID) for every log line.

    The id stays set until the response is closed (`request_finished`), so Django's own
    "Not Found"/"Server Error" lines, written after the middleware returned, carry it too.
    The request also starts in `public`: lines logged before tenant routing never carry the
    tenant of the previous request this thread served.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        from portal.schemas import tenant_connection

        tenant_connection().set_schema_to_public()  # no query: the search path is set lazily
        request_id = new_request_id(request.META.get("HTTP_X_REQUEST_ID"))
        request.request_id = request_id  # type: ignore[attr-defined]
        request_id_var.set(request_id)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response


@receiver(request_finished, dispatch_uid="portal_logs_request_finished")
def _request_finished(**_: Any) -> None:
    request_id_var.set("-")


# The context of each running task, restored afterwards: a task applied eagerly inside a
# request gives the request its own id back when it ends.
_task_tokens: dict[str, tuple[Token[str], Token[str | None]]] = {}


@task_prerun.connect(dispatch_uid="portal_logs_task_context")
def _task_context(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    tokens = (request_id_var.set(task_id or "-"), task_name_var.set(getattr(task, "name", None)))
    if task_id:
        _task_tokens[task_id] = tokens


@task_postrun.connect(dispatch_uid="portal_logs_task_context_end")
def _task_context_end(task_id: str | None = None, **_: Any) -> None:
    tokens = _task_tokens.pop(task_id, None) if task_id else None
    if tokens is None:
        return
    try:
        request_id_var.reset(tokens[0])
        task_name_var.reset(tokens[1])
    except ValueError:  # ended in another context than it started: just clear it
        request_id_var.set("-")
        task_name_var.set(None)
