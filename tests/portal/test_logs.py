"""JSON log lines: tenant and request id per request (echoed in X-Request-ID) and per task."""

import io
import json
import logging
import threading
from collections.abc import Callable, Iterator

import pytest
from celery import shared_task
from django.conf import settings
from django.test import Client
from django_tenants.utils import schema_context, tenant_context

from jobs.tasks import TenantScopedTask
from portal.logs import ContextFilter, JsonFormatter, request_id_var
from tests.conftest import tenant_client

task_logger = logging.getLogger("tests.portal.task")


@shared_task(base=TenantScopedTask, name="tests.portal.log_inside_a_task")
def log_inside_a_task() -> None:
    task_logger.info("inside the task")


@pytest.fixture
def json_lines() -> Iterator[Callable[[], list[dict]]]:
    """What the console handler would write, captured: the root logger's JSON lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)


def test_production_logs_are_json_lines_with_the_context_filter():
    assert settings.LOG_FORMAT == "json"  # DEBUG is off in the tests, as in production
    console = settings.LOGGING["handlers"]["console"]
    assert console["formatter"] == "json"
    assert console["filters"] == ["context"]


def test_a_request_under_a_tenant_logs_its_tenant_and_echoed_request_id(alpha, json_lines):
    response = tenant_client(alpha).get("/no-such-page/", HTTP_X_REQUEST_ID="lb-7f3a.9_x")
    assert response.status_code == 404
    assert response["X-Request-ID"] == "lb-7f3a.9_x"
    [line] = [line for line in json_lines() if line["logger"] == "django.request"]
    assert line["message"] == "Not Found: /no-such-page/"
    assert (line["tenant"], line["request_id"]) == ("alpha", "lb-7f3a.9_x")
    assert line["level"] == "WARNING"
    assert set(line) >= {"time", "level", "logger", "message", "tenant", "request_id"}
    assert request_id_var.get() == "-"  # the id ends with its request


@pytest.mark.parametrize(
    "sent",
    ["", "has spaces", "x" * 65, "<script>", "a\nb", "id;drop", "ünïcode"],
)
def test_an_unusable_request_id_is_replaced(alpha, sent, json_lines):
    response = Client(HTTP_HOST="alpha.localhost", HTTP_X_REQUEST_ID=sent).get("/missing/")
    new = response["X-Request-ID"]
    assert new != sent
    assert len(new) == 32 and int(new, 16) >= 0  # a uuid4 in hex
    [line] = [line for line in json_lines() if line["logger"] == "django.request"]
    assert line["request_id"] == new


def test_each_request_gets_its_own_id(db):
    first = Client(HTTP_HOST="nonsense").get("/health/live")["X-Request-ID"]
    second = Client(HTTP_HOST="nonsense").get("/health/live")["X-Request-ID"]
    assert first != second


def test_a_tenant_task_logs_its_tenant_and_task_id(alpha, json_lines):
    with schema_context(alpha.schema_name):
        result = log_inside_a_task.apply()
    assert result.successful(), result.traceback
    [line] = [line for line in json_lines() if line["logger"] == task_logger.name]
    assert line["message"] == "inside the task"
    assert line["tenant"] == "alpha"
    assert line["request_id"] == result.id
    assert line["task"] == "tests.portal.log_inside_a_task"
    assert request_id_var.get() == "-"  # restored after the task


def test_lines_outside_requests_carry_the_active_schema(alpha, json_lines):
    log = logging.getLogger("tests.portal.schema")
    log.info("platform")
    with tenant_context(alpha):  # how the DICOM gateway handles an association
        log.info("in tenant_context")
    with schema_context(alpha.schema_name):  # a stand-in tenant: the slug from the schema
        log.info("in schema_context")
    assert [(line["message"], line["tenant"]) for line in json_lines()] == [
        ("platform", "public"),
        ("in tenant_context", "alpha"),
        ("in schema_context", "alpha"),
    ]


def test_request_ids_do_not_leak_between_threads(json_lines):
    request_id_var.set("main-thread")
    seen: list[str] = []
    thread = threading.Thread(target=lambda: seen.append(request_id_var.get()))
    thread.start()
    thread.join()
    request_id_var.set("-")
    assert seen == ["-"]


def test_exceptions_are_one_json_line(json_lines):
    try:
        raise ValueError("broken\nacross lines")
    except ValueError:
        logging.getLogger("tests.portal.error").exception("it failed")
    [line] = json_lines()
    assert line["level"] == "ERROR"
    assert "Traceback" in line["exception"] and "ValueError: broken" in line["exception"]


def test_the_plain_format_shows_tenant_and_request_id(alpha):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(logging.Formatter(settings.LOGGING["formatters"]["plain"]["format"]))
    log = logging.getLogger("tests.portal.plain")
    log.addHandler(handler)
    try:
        token = request_id_var.set("req-1")
        with tenant_context(alpha):
            log.warning("hello")
        request_id_var.reset(token)
    finally:
        log.removeHandler(handler)
    assert "WARNING [alpha req-1] tests.portal.plain hello" in stream.getvalue()
