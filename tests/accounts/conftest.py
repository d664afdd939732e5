"""Helpers of the accounts tests: API clients with tokens, audit rows, authenticator codes."""

import time
from typing import Any

import pytest
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_tenants.utils import schema_context

from accounts.models import User
from accounts.services import api_token_create
from audit.models import AuditEvent
from tenants.models import Tenant
from tests.conftest import host_of


def api(tenant: Tenant | None, raw: str) -> Client:
    """A client of a tenant's (or, with None, the platform's) API using a bearer token."""
    host = host_of(tenant) if tenant else "localhost"
    return Client(HTTP_HOST=host, HTTP_AUTHORIZATION=f"Bearer {raw}")


def token_for(tenant: Tenant, user: User, *, scope: str = "full", **kwargs: Any) -> str:
    with schema_context(tenant.schema_name):
        return api_token_create(user=user, name=f"{scope} token", scope=scope, **kwargs)[1]


def events(tenant: Tenant | None, **filters: Any) -> list[AuditEvent]:
    with schema_context(tenant.schema_name if tenant else "public"):
        return list(AuditEvent.objects.filter(**filters).order_by("id"))


def in_schema(tenant: Tenant, fn: Any) -> Any:
    """Run `fn()` in the tenant's schema (a read-back of what the site wrote)."""
    with schema_context(tenant.schema_name):
        return fn()


def code_for(device: TOTPDevice) -> str:
    """A code the device accepts now: past the last used time step (codes are single-use)."""
    device.refresh_from_db()
    now_t = int(time.time() - device.t0) // device.step
    target = max(now_t + device.drift, device.last_t + 1)
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, drift=target - now_t):06d}"


def wrong_code(device: TOTPDevice) -> str:
    right = {int(code_for(device)), *(totp(device.bin_key, drift=d) for d in range(-2, 4))}
    return next(f"{n:06d}" for n in range(1000000) if n not in right)


@pytest.fixture
def alpha_operator(make_user, alpha) -> User:  # type: ignore[no-untyped-def]
    return make_user(alpha, username="oscar", role="operator")


@pytest.fixture(autouse=True)
def _fresh_counters(fresh_rate_limits, monkeypatch):
    """Failed-login coalescing counts in Redis, outside the test's transaction, per window of
    wall-clock time: each test starts at zero, inside one window."""
    monkeypatch.setattr("accounts.services._clock", lambda: 1_800_000_000.0)
