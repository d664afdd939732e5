"""The audit tests count failed logins, which are coalesced by counters kept in Redis."""

import pytest


@pytest.fixture(autouse=True)
def _fresh_counters(fresh_rate_limits, monkeypatch):  # type: ignore[no-untyped-def]
    """Every test starts with no failed logins counted, inside one window."""
    monkeypatch.setattr("accounts.services._clock", lambda: 1_800_000_000.0)
