"""Login throttling: five wrong passwords lock a username from one address, per tenant."""

from django.test import Client

from tests.accounts.conftest import events
from tests.conftest import PASSWORD, logged_in, tenant_client

ATTACKER = "203.0.113.66"


def hammer(client: Client, username: str) -> list[int]:
    return [
        client.post("/account/login/", {"username": username, "password": f"guess-{n}"}).status_code
        for n in range(5)
    ]


def test_five_wrong_passwords_lock_the_user_out_from_that_address(alpha, alpha_admin):
    client = tenant_client(alpha, REMOTE_ADDR=ATTACKER)
    statuses = hammer(client, "alice")
    assert statuses[:4] == [200] * 4 and statuses[4] == 429

    right = client.post("/account/login/", {"username": "alice", "password": PASSWORD})
    assert right.status_code == 429
    page = right.content.decode()
    assert "Too many failed logins" in page and "blocked for 15 minutes" in page
    assert client.get("/").status_code == 302  # not logged in

    for n in range(5):  # refused by the lockout: no row of their own
        client.post("/account/login/", {"username": "alice", "password": f"again-{n}"})
    # Coalesced: one row for alice from that address in the window, one for the lockout.
    (failure,) = events(alpha, action="login.failure", actor_name="alice")
    assert failure.source_address == ATTACKER and failure.details == {"window": "15m"}
    (lockout,) = events(alpha, action="login.lockout", actor_name="alice")
    assert lockout.outcome == "denied" and lockout.details["failures"] == 5
    # The same person from another address still gets in (the lock is username + address).
    logged_in(tenant_client(alpha, REMOTE_ADDR="198.51.100.1"), "alice")


def test_a_lockout_in_one_tenant_leaves_other_tenants_and_the_platform_alone(
    alpha, beta, alpha_admin, make_user
):
    make_user(beta, username="alice")
    make_user(None, username="alice", superuser=True)
    hammer(tenant_client(alpha, REMOTE_ADDR=ATTACKER), "alice")
    locked = tenant_client(alpha, REMOTE_ADDR=ATTACKER).post(
        "/account/login/", {"username": "alice", "password": PASSWORD}
    )
    assert locked.status_code == 429

    logged_in(tenant_client(beta, REMOTE_ADDR=ATTACKER), "alice")
    logged_in(Client(HTTP_HOST="localhost", REMOTE_ADDR=ATTACKER), "alice")
    assert events(beta, action="login.failure") == []
    assert events(None, action="login.lockout", actor_name="alice") == []


def test_platform_lockout_does_not_touch_tenants(alpha, alpha_admin, make_user):
    make_user(None, username="alice", superuser=True)
    platform = Client(HTTP_HOST="localhost", REMOTE_ADDR=ATTACKER)
    assert hammer(platform, "alice")[4] == 429
    assert (
        platform.post("/account/login/", {"username": "alice", "password": PASSWORD}).status_code
        == 429
    )
    assert len(events(None, action="login.failure", actor_name="alice")) == 1
    assert len(events(None, action="login.lockout", actor_name="alice")) == 1
    logged_in(tenant_client(alpha, REMOTE_ADDR=ATTACKER), "alice")


def wrong_logins(client: Client, usernames) -> None:
    for username in usernames:
        client.post("/account/login/", {"username": username, "password": "wrong"})


def test_failed_logins_under_many_names_cannot_grow_the_audit_log_at_will(
    alpha, beta, make_user, monkeypatch
):
    """One address trying 150 usernames writes its first 20 and a row at the 100th failure;
    another address, and the other tenant, are counted on their own."""
    wrong_logins(tenant_client(alpha, REMOTE_ADDR=ATTACKER), [f"u{n}" for n in range(150)])
    rows = events(alpha, action="login.failure", source_address=ATTACKER)
    assert len(rows) == 21
    assert [r.actor_name for r in rows[:20]] == [f"u{n}" for n in range(20)]
    assert rows[20].actor_name == "u99" and rows[20].details["failures_from_address"] == 100

    wrong_logins(tenant_client(alpha, REMOTE_ADDR="198.51.100.9"), ["u0"])
    assert len(events(alpha, action="login.failure", source_address="198.51.100.9")) == 1
    wrong_logins(tenant_client(beta, REMOTE_ADDR=ATTACKER), ["u0"])
    assert len(events(beta, action="login.failure")) == 1


def test_a_tenant_takes_a_bounded_number_of_failure_rows_from_many_addresses(
    alpha, beta, monkeypatch
):
    monkeypatch.setattr("accounts.services.TENANT_ROWS", 5)
    for n in range(12):
        wrong_logins(tenant_client(alpha, REMOTE_ADDR=f"203.0.113.{n + 1}"), ["bob"])
    rows = events(alpha, action="login.failure")
    assert len(rows) == 6  # five rows, then one when the tenant's count reaches 10
    assert rows[-1].details["failures_in_tenant"] == 10
    wrong_logins(tenant_client(beta, REMOTE_ADDR="203.0.113.1"), ["bob"])
    assert len(events(beta, action="login.failure")) == 1
