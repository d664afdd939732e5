"""Clients of each role on a tenant's site and API, and readers of the configuration tables."""

import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from django.test import Client
from django_tenants.utils import schema_context

from accounts.models import Role
from accounts.services import api_token_create
from audit.models import AuditEvent
from configuration.models import RemoteNode, RetentionRule, SettingChange
from configuration.selectors import tenant_settings
from tenants.models import Tenant
from tests.conftest import logged_in, tenant_client


@pytest.fixture(autouse=True)
def _echo_counters_start_at_zero(fresh_rate_limits) -> None:  # type: ignore[no-untyped-def]
    """The C-ECHO button is rate-limited per tenant; each test here starts with a full budget."""


@pytest.fixture
def hang_up_listener() -> Iterator[tuple[int, list[bool]]]:
    """A TCP service that is not DICOM: it accepts, closes at once, and counts the connections."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    accepted: list[bool] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            accepted.append(True)
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1]), accepted
    stop.set()
    thread.join()
    server.close()


@pytest.fixture
def site_as(make_user) -> Callable[..., Client]:  # type: ignore[no-untyped-def]
    """A logged-in browser client of `tenant` for a new user with `role`."""

    def make(tenant: Tenant, role: str = Role.ADMIN) -> Client:
        user = make_user(tenant, role=role)
        return logged_in(tenant_client(tenant), user.username)

    return make


@pytest.fixture
def api_as(make_user) -> Callable[..., Client]:  # type: ignore[no-untyped-def]
    """An API client of `tenant` with a bearer token of a new user with `role`."""

    def make(tenant: Tenant, role: str = Role.ADMIN, scope: str = "full") -> Client:
        user = make_user(tenant, role=role)
        with schema_context(tenant.schema_name):
            _, raw = api_token_create(user=user, name="tests", scope=scope)
        return tenant_client(tenant, HTTP_AUTHORIZATION=f"Bearer {raw}")

    return make


def settings_of(tenant: Tenant):  # type: ignore[no-untyped-def]
    with schema_context(tenant.schema_name):
        return tenant_settings()


def changes_of(tenant: Tenant, **filters: object) -> list[SettingChange]:
    with schema_context(tenant.schema_name):
        return list(SettingChange.objects.filter(**filters).order_by("id"))


def audit_of(tenant: Tenant, action: str) -> list[AuditEvent]:
    with schema_context(tenant.schema_name):
        return list(AuditEvent.objects.filter(action=action).order_by("id"))


def nodes_of(tenant: Tenant) -> list[RemoteNode]:
    with schema_context(tenant.schema_name):
        return list(RemoteNode.objects.order_by("id"))


def rules_of(tenant: Tenant) -> list[RetentionRule]:
    with schema_context(tenant.schema_name):
        return list(RetentionRule.objects.order_by("id"))


def add_node(tenant: Tenant, **values: object) -> RemoteNode:
    fields = {"ae_title": "CT1", "host": "10.0.0.5", "port": 104, **values}
    with schema_context(tenant.schema_name):
        return RemoteNode.objects.create(**fields)


def add_rule(tenant: Tenant, **values: object) -> RetentionRule:
    fields = {"modality": "CT", "days": 365, **values}
    with schema_context(tenant.schema_name):
        return RetentionRule.objects.create(**fields)
