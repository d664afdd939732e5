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

    failures = events(alpha, action="login.failure", actor_name="alice")
    assert len(failures) == 5 and {e.source_address for e in failures} == {ATTACKER}
    lockouts = events(alpha, action="login.lockout", actor_name="alice")
    assert lockouts and all(e.outcome == "denied" for e in lockouts)
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
    assert len(events(None, action="login.failure", actor_name="alice")) == 5
    logged_in(tenant_client(alpha, REMOTE_ADDR=ATTACKER), "alice")
