"""API tokens on /account/tokens/ and a user's page: least privilege, shown once, hashed,
revocable, expiring; each proven by a real call to /api/v1/me/."""

import re
from datetime import timedelta
from pathlib import Path

from django.utils import timezone
from django_tenants.utils import schema_context

from accounts.models import ApiToken, Role, TokenScope
from tests.accounts.conftest import api, events, in_schema, token_for
from tests.conftest import logged_in, tenant_client

RAW_RE = re.compile(r'value="(pp_[0-9a-f]+_[A-Za-z0-9_-]+)"')


def created_raw(response) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.content[:500]
    assert "no-store" in response["Cache-Control"]  # the secret stays out of caches
    match = RAW_RE.search(response.content.decode())
    assert match, response.content.decode()
    return match.group(1)


def test_own_token_is_shown_once_stored_hashed_and_works_with_its_scope(
    alpha, alpha_admin, alpha_admin_client
):
    raw = created_raw(
        alpha_admin_client.post("/account/tokens/", {"name": "report script", "scope": "read"})
    )
    with schema_context(alpha.schema_name):
        token = ApiToken.objects.get(user=alpha_admin)
    assert token.scope == TokenScope.READ and token.name == "report script"
    key_id, secret = ApiToken.split(raw) or ("", "")
    assert token.key_id == key_id and token.key_hash == ApiToken.hash_secret(secret)
    assert secret not in str(vars(token))  # only the hash is stored

    listing = alpha_admin_client.get("/account/tokens/").content.decode()
    assert "report script" in listing and raw not in listing and "never used" in listing

    me = api(alpha, raw).get("/api/v1/me/")
    assert me.status_code == 200
    assert me.json() == {
        "username": "alice",
        "email": "someone@example.org",
        "role": "admin",
        "tenant": "alpha",
        "token_scope": "read",
    }
    assert "never used" not in alpha_admin_client.get("/account/tokens/").content.decode()
    # A read token reads, and cannot manage users even though its owner could.
    assert api(alpha, raw).get("/api/v1/users/").status_code == 403
    (created,) = events(alpha, action="token.create")
    assert created.actor_name == "alice" and created.details["scope"] == "read"
    assert raw not in str(created.details)


def test_scope_choices_follow_the_role_and_other_scopes_are_refused(alpha, make_user):
    viewer = make_user(alpha, username="vera", role=Role.VIEWER)
    client = logged_in(tenant_client(alpha), viewer.username)
    choices = [c[0] for c in client.get("/account/tokens/").context["form"].fields["scope"].choices]
    assert choices == ["full", "read"]  # a viewer has nothing to store
    response = client.post("/account/tokens/", {"name": "sneaky", "scope": "store"})
    assert response.status_code == 200
    assert "Select a valid choice" in " ".join(response.context["form"].errors["scope"])
    assert in_schema(alpha, ApiToken.objects.count) == 0
    assert events(alpha, action="token.create") == []


def test_expiry_must_lie_ahead_and_expired_tokens_are_refused(
    alpha, alpha_admin, alpha_admin_client
):
    yesterday = (timezone.localdate() - timedelta(days=1)).isoformat()
    response = alpha_admin_client.post(
        "/account/tokens/", {"name": "old", "scope": "full", "expires_on": yesterday}
    )
    assert "expiry date has passed" in " ".join(response.context["form"].errors["expires_on"])
    assert in_schema(alpha, ApiToken.objects.count) == 0
    # With a missing name too: both problems in the same answer.
    both = (
        alpha_admin_client.post(
            "/account/tokens/", {"name": "", "scope": "full", "expires_on": yesterday}
        )
        .context["form"]
        .errors
    )
    assert {"name", "expires_on"} <= set(both), both

    today = timezone.localdate().isoformat()
    raw = created_raw(
        alpha_admin_client.post(
            "/account/tokens/", {"name": "today", "scope": "full", "expires_on": today}
        )
    )
    assert api(alpha, raw).get("/api/v1/me/").status_code == 200
    with schema_context(alpha.schema_name):
        ApiToken.objects.filter(name="today").update(expires_at=timezone.now())
    expired = api(alpha, raw).get("/api/v1/me/")
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]
    assert "Expired" in alpha_admin_client.get("/account/tokens/").content.decode()


def test_revoking_asks_first_then_the_token_stops_working(alpha, alpha_admin, alpha_admin_client):
    raw = token_for(alpha, alpha_admin)
    token = in_schema(alpha, ApiToken.objects.get)
    confirm = alpha_admin_client.get(f"/account/tokens/{token.pk}/revoke/")
    assert b"Revoke the token" in confirm.content
    assert api(alpha, raw).get("/api/v1/me/").status_code == 200  # GET changed nothing

    done = alpha_admin_client.post(f"/account/tokens/{token.pk}/revoke/")
    assert done.status_code == 302 and done["Location"] == "/account/tokens/"
    refused = api(alpha, raw).get("/api/v1/me/")
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    (revoke,) = events(alpha, action="token.revoke")
    assert revoke.actor_name == "alice" and revoke.object_id == str(token.pk)
    # Revoking again changes nothing and records nothing.
    alpha_admin_client.post(f"/account/tokens/{token.pk}/revoke/")
    assert len(events(alpha, action="token.revoke")) == 1


def test_revoking_asks_on_a_page_as_every_destructive_action_does(
    alpha, alpha_admin, alpha_admin_client
):
    token_for(alpha, alpha_admin)
    token = in_schema(alpha, ApiToken.objects.get)
    listing = alpha_admin_client.get("/account/tokens/").content.decode()
    assert f'href="/account/tokens/{token.pk}/revoke/?next=' in listing
    confirm = alpha_admin_client.get(f"/account/tokens/{token.pk}/revoke/").content.decode()
    assert "Revoke the token" in confirm and 'type="submit"' in confirm
    assert (
        in_schema(alpha, lambda: ApiToken.objects.get().revoked_at) is None
    )  # GET changes nothing
    # No page asks with the browser's own confirm() box.
    templates = Path(__file__).resolve().parents[2] / "templates"
    assert not [
        p.name
        for p in templates.rglob("*.html")
        if "hx-confirm" in p.read_text() or "confirm(" in p.read_text()
    ]


def test_nobody_but_admins_revokes_someone_elses_token(
    alpha, alpha_admin, alpha_operator, make_user
):
    raw = token_for(alpha, alpha_admin)
    token = in_schema(alpha, ApiToken.objects.get)
    client = logged_in(tenant_client(alpha), alpha_operator.username)
    assert client.post(f"/account/tokens/{token.pk}/revoke/").status_code == 404
    assert client.get("/users/tokens/").status_code == 403
    assert api(alpha, raw).get("/api/v1/me/").status_code == 200
    assert events(alpha, action="token.revoke") == []


def test_admin_makes_a_store_token_for_a_modality_and_revokes_any_token(
    alpha, beta, alpha_admin_client, make_user
):
    scanner = make_user(alpha, username="ct-scanner", role=Role.OPERATOR)
    page = alpha_admin_client.get(f"/users/{scanner.pk}/")
    # Not `full`: a full token would let the admin act as the scanner's account.
    assert [c[0] for c in page.context["token_form"].fields["scope"].choices] == [
        "read",
        "store",
    ]
    raw = created_raw(
        alpha_admin_client.post(f"/users/{scanner.pk}/", {"name": "CT uploads", "scope": "store"})
    )
    me = api(alpha, raw).get("/api/v1/me/").json()
    assert me["username"] == "ct-scanner" and me["token_scope"] == "store"
    assert api(alpha, raw).get("/api/v1/audit/").status_code == 403  # store only stores

    other = make_user(beta, username="beta-robot", role=Role.OPERATOR)
    token_for(beta, other)
    overview = alpha_admin_client.get("/users/tokens/").content.decode()
    assert "CT uploads" in overview and "ct-scanner" in overview
    assert "beta-robot" not in overview

    token = in_schema(alpha, lambda: ApiToken.objects.get(name="CT uploads"))
    assert (
        alpha_admin_client.post(f"/account/tokens/{token.pk}/revoke/", {"next": "/users/tokens/"})[
            "Location"
        ]
        == "/users/tokens/"
    )
    assert api(alpha, raw).get("/api/v1/me/").status_code == 401
    (created,) = events(alpha, action="token.create")
    assert created.actor_name == "alice" and created.details["owner"] == "ct-scanner"


def test_tokens_of_a_deactivated_user_stop_working(alpha, alpha_admin_client, alpha_operator):
    raw = token_for(alpha, alpha_operator, scope="store")
    assert api(alpha, raw).get("/api/v1/me/").status_code == 200
    alpha_admin_client.post(f"/users/{alpha_operator.pk}/deactivate/")
    refused = api(alpha, raw).get("/api/v1/me/")
    assert refused.status_code == 401 and "deactivated" in refused.json()["detail"]
    page = alpha_admin_client.get(f"/users/{alpha_operator.pk}/")
    assert "token_form" in page.context and "New token for" not in page.content.decode()


def test_a_token_of_one_tenant_is_unknown_in_another(alpha, beta, alpha_admin):
    raw = token_for(alpha, alpha_admin)
    assert api(beta, raw).get("/api/v1/me/").status_code == 401


def test_super_admins_manage_their_platform_tokens(db, superadmin, superadmin_client):
    page = superadmin_client.get("/account/tokens/")
    assert page.status_code == 200
    assert [c[0] for c in page.context["form"].fields["scope"].choices] == ["full"]
    raw = created_raw(
        superadmin_client.post("/account/tokens/", {"name": "fleet automation", "scope": "full"})
    )
    assert api(None, raw).get("/api/v1/tenants/").status_code == 200
    token = ApiToken.objects.get(user=superadmin)
    assert superadmin_client.post(f"/account/tokens/{token.pk}/revoke/").status_code == 302
    assert api(None, raw).get("/api/v1/tenants/").status_code == 401
    assert [e.action for e in events(None, actor=superadmin, action__startswith="token.")] == [
        "token.create",
        "token.revoke",
    ]


def test_an_admin_cannot_mint_a_full_token_for_another_user(
    alpha, alpha_admin, alpha_admin_client, make_user
):
    """A full token for another admin would act with their rights, past their second factor
    and under their name in the audit log: by page or by API, only read or store for others."""
    other_admin = make_user(alpha, username="bob", role=Role.ADMIN)
    page = alpha_admin_client.post(f"/users/{other_admin.pk}/", {"name": "as bob", "scope": "full"})
    assert page.status_code == 200 and "as bob" not in page.content.decode().split("<form")[0]
    assert "scope" in page.context["token_form"].errors
    client = api(alpha, token_for(alpha, alpha_admin))
    refused = client.post(
        "/api/v1/tokens/", {"name": "as bob", "scope": "full", "user": other_admin.pk}
    )
    assert refused.status_code == 400 and "Only they can create a full token" in str(refused.json())
    assert not in_schema(alpha, lambda: ApiToken.objects.filter(user=other_admin).exists())
    allowed = client.post(
        "/api/v1/tokens/", {"name": "bob reads", "scope": "read", "user": other_admin.pk}
    )
    assert allowed.status_code == 201 and allowed.json()["scope"] == "read"
    # Their own full token, bob may create.
    own = api(alpha, token_for(alpha, other_admin)).post(
        "/api/v1/tokens/", {"name": "mine", "scope": "full"}
    )
    assert own.status_code == 201


def test_a_token_without_an_expiry_date_expires_after_the_default(
    alpha, alpha_admin, alpha_admin_client, settings
):
    settings.PORTAL_TOKEN_DEFAULT_DAYS = 30
    created_raw(alpha_admin_client.post("/account/tokens/", {"name": "script", "scope": "read"}))
    token = in_schema(alpha, lambda: ApiToken.objects.get(name="script"))
    assert token.expires_at is not None
    left = token.expires_at - timezone.now()
    assert timedelta(days=29, hours=23) < left <= timedelta(days=30)
    settings.PORTAL_TOKEN_DEFAULT_DAYS = 0
    created_raw(alpha_admin_client.post("/account/tokens/", {"name": "forever", "scope": "read"}))
    assert in_schema(alpha, lambda: ApiToken.objects.get(name="forever")).expires_at is None
