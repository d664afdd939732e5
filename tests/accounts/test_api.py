"""/api/v1/users/ and /api/v1/tokens/: the same rules as the pages, by token."""

from django.core import mail
from django_tenants.utils import schema_context

from accounts.models import ApiToken, Role, User
from tenants.models import Tenant
from tests.accounts.conftest import api, events, in_schema, token_for

JSON = "application/json"


def test_user_list_filters_and_never_shows_another_tenant(alpha, beta, alpha_admin, make_user):
    make_user(alpha, username="carol", role=Role.VIEWER)
    sleeper = make_user(alpha, username="sleeper", role=Role.AUDITOR)
    with schema_context(alpha.schema_name):
        User.objects.filter(pk=sleeper.pk).update(is_active=False)
    make_user(beta, username="carol-beta", role=Role.VIEWER)
    client = api(alpha, token_for(alpha, alpha_admin))

    def names(query: str = "") -> set[str]:
        response = client.get(f"/api/v1/users/{query}")
        assert response.status_code == 200, response.content
        return {u["username"] for u in response.json()["results"]}

    assert names() == {"admin", "alice", "carol", "sleeper"}
    assert names("?role=viewer") == {"carol"}
    assert names("?is_active=false") == {"sleeper"}
    assert names("?is_active=true&search=CAR") == {"carol"}
    assert names("?search=beta") == set()
    assert client.get("/api/v1/users/?role=wizard").status_code == 400
    one = client.get(f"/api/v1/users/{sleeper.pk}/").json()
    assert one["username"] == "sleeper" and one["is_active"] is False


def test_invite_by_api_answers_the_link_once_and_mails_it(
    alpha, alpha_admin, django_capture_on_commit_callbacks
):
    client = api(alpha, token_for(alpha, alpha_admin))
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/api/v1/users/",
            {"username": "rita", "email": "rita@alpha.example", "role": "operator"},
            content_type=JSON,
        )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["role"] == "operator" and body["is_active"] is True
    assert body["set_password_url"].startswith("https://alpha.localhost/account/set-password/")
    assert body["set_password_url"] in mail.outbox[0].body
    assert "set_password_url" not in client.get(f"/api/v1/users/{body['id']}/").json()
    (invite,) = events(alpha, action="user.invite")
    assert invite.actor_name == "alice"

    again = client.post(
        "/api/v1/users/", {"username": "Rita", "email": "r@alpha.example"}, content_type=JSON
    )
    assert again.status_code == 400 and "username" in again.json()
    assert in_schema(alpha, User.objects.filter(username__iexact="rita").count) == 1


def test_invite_beyond_quota_is_a_400_with_the_reason(alpha, alpha_admin):
    active = in_schema(alpha, User.objects.filter(is_active=True).count)
    Tenant.objects.filter(pk=alpha.pk).update(quota_users=active)
    response = api(alpha, token_for(alpha, alpha_admin)).post(
        "/api/v1/users/", {"username": "extra", "email": "e@alpha.example"}, content_type=JSON
    )
    assert response.status_code == 400
    assert "reached its quota" in str(response.json())
    assert not in_schema(alpha, User.objects.filter(username="extra").exists)


def test_update_deactivate_reactivate_and_reset_by_api(
    alpha, alpha_admin, alpha_operator, django_capture_on_commit_callbacks
):
    client = api(alpha, token_for(alpha, alpha_admin))
    url = f"/api/v1/users/{alpha_operator.pk}/"
    patched = client.patch(url, {"role": "viewer", "first_name": "Oz"}, content_type=JSON)
    assert patched.status_code == 200 and patched.json()["role"] == "viewer"
    assert [e.details for e in events(alpha, action="user.role_change")] == [
        {"from": "operator", "to": "viewer"}
    ]
    assert client.patch(url, {"email": "bad"}, content_type=JSON).status_code == 400

    assert client.post(url + "deactivate/").json()["is_active"] is False
    assert client.post(url + "reactivate/").json()["is_active"] is True
    with django_capture_on_commit_callbacks(execute=True):
        reset = client.post(url + "reset-password/")
    assert reset.status_code == 200
    assert reset.json()["set_password_url"].startswith("https://alpha.localhost/")
    assert len(mail.outbox) == 1
    assert [e.action for e in events(alpha, object_id=str(alpha_operator.pk))] == [
        "user.update",
        "user.role_change",
        "user.deactivate",
        "user.reactivate",
        "user.password_reset",
    ]


def test_the_last_admin_rule_holds_over_the_api(alpha, alpha_admin):
    client = api(alpha, token_for(alpha, alpha_admin))
    founder = in_schema(alpha, lambda: User.objects.get(username="admin"))
    assert client.post(f"/api/v1/users/{founder.pk}/deactivate/").status_code == 200
    demote = client.patch(f"/api/v1/users/{alpha_admin.pk}/", {"role": "viewer"}, content_type=JSON)
    assert demote.status_code == 400 and "last active admin" in demote.json()["role"][0]
    deactivate = client.post(f"/api/v1/users/{alpha_admin.pk}/deactivate/")
    assert deactivate.status_code == 400 and "last active admin" in str(deactivate.json())
    alice = in_schema(alpha, lambda: User.objects.get(pk=alpha_admin.pk))
    assert alice.is_active and alice.role == Role.ADMIN


def test_users_api_refuses_non_admins_and_narrow_tokens(alpha, alpha_admin, alpha_operator):
    operator = api(alpha, token_for(alpha, alpha_operator))
    assert operator.get("/api/v1/users/").status_code == 403
    created = operator.post(
        "/api/v1/users/", {"username": "mole", "email": "m@x.example"}, content_type=JSON
    )
    assert created.status_code == 403
    promoted = operator.patch(
        f"/api/v1/users/{alpha_operator.pk}/", {"role": "admin"}, content_type=JSON
    )
    assert promoted.status_code == 403
    admin_read = api(alpha, token_for(alpha, alpha_admin, scope="read"))
    assert admin_read.post(f"/api/v1/users/{alpha_operator.pk}/deactivate/").status_code == 403
    oscar = in_schema(alpha, lambda: User.objects.get(pk=alpha_operator.pk))
    assert oscar.role == Role.OPERATOR and oscar.is_active
    assert not in_schema(alpha, User.objects.filter(username="mole").exists)
    assert events(alpha, action__startswith="user.") == []


def test_own_tokens_over_the_api(alpha, alpha_operator):
    client = api(alpha, token_for(alpha, alpha_operator))
    created = client.post(
        "/api/v1/tokens/",
        {"name": "uploader", "scope": "store", "expires_at": "2999-01-01T00:00:00Z"},
        content_type=JSON,
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["token"].startswith(body["prefix"] + "_") and body["scope"] == "store"
    assert api(alpha, body["token"]).get("/api/v1/me/").json()["token_scope"] == "store"

    listed = client.get("/api/v1/tokens/").json()["results"]
    assert {t["name"] for t in listed} == {"uploader", "full token"}
    assert all("token" not in t for t in listed)
    uploader = next(t for t in listed if t["name"] == "uploader")
    assert uploader["last_used_at"] is not None and uploader["status"] == "active"

    assert client.delete(f"/api/v1/tokens/{body['id']}/").status_code == 204
    assert api(alpha, body["token"]).get("/api/v1/me/").status_code == 401
    assert client.get(f"/api/v1/tokens/{body['id']}/").json()["status"] == "revoked"

    past = client.post(
        "/api/v1/tokens/",
        {"name": "late", "expires_at": "2001-01-01T00:00:00Z"},
        content_type=JSON,
    )
    assert past.status_code == 400 and "expires_at" in past.json()
    viewer_scope = client.post(
        "/api/v1/tokens/", {"name": "x", "scope": "admin"}, content_type=JSON
    )
    assert viewer_scope.status_code == 400
    assert in_schema(alpha, ApiToken.objects.count) == 2


def test_store_token_cannot_mint_tokens(alpha, alpha_operator):
    store = api(alpha, token_for(alpha, alpha_operator, scope="store"))
    response = store.post("/api/v1/tokens/", {"name": "escalate"}, content_type=JSON)
    assert response.status_code == 403
    assert in_schema(alpha, ApiToken.objects.count) == 1


def test_admins_see_create_and_revoke_other_users_tokens_staff_do_not(
    alpha, alpha_admin, alpha_operator, make_user
):
    viewer = make_user(alpha, username="vic", role=Role.VIEWER)
    token_for(alpha, viewer)
    viewer_token = in_schema(alpha, lambda: ApiToken.objects.get(user=viewer))
    operator = api(alpha, token_for(alpha, alpha_operator))
    assert operator.get(f"/api/v1/tokens/?user={viewer.pk}").status_code == 403
    assert operator.delete(f"/api/v1/tokens/{viewer_token.pk}/").status_code == 404
    made = operator.post(
        "/api/v1/tokens/", {"name": "for vic", "user": viewer.pk}, content_type=JSON
    )
    assert made.status_code == 403
    assert in_schema(alpha, lambda: ApiToken.objects.filter(user=viewer).count()) == 1

    admin = api(alpha, token_for(alpha, alpha_admin))
    listed = admin.get(f"/api/v1/tokens/?user={viewer.pk}").json()["results"]
    assert [t["username"] for t in listed] == ["vic"]
    made = admin.post(
        "/api/v1/tokens/",
        {"name": "vic's viewer", "scope": "read", "user": viewer.pk},
        content_type=JSON,
    )
    assert made.status_code == 201 and made.json()["username"] == "vic"
    store_for_viewer = admin.post(
        "/api/v1/tokens/", {"name": "no", "scope": "store", "user": viewer.pk}, content_type=JSON
    )
    assert store_for_viewer.status_code == 400 and "scope" in store_for_viewer.json()
    revoked = admin.post(f"/api/v1/tokens/{viewer_token.pk}/revoke/")
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"


def test_openapi_describes_the_bodies_that_differ(alpha_admin_client):
    schema = alpha_admin_client.get("/api/schema/", {"format": "json"}).json()
    paths = schema["paths"]
    components = schema["components"]["schemas"]

    def ref(operation: dict, status: str) -> str:  # type: ignore[type-arg]
        content = operation["responses"][status]["content"]["application/json"]["schema"]
        return content["$ref"].rsplit("/", 1)[-1]

    def body(operation: dict) -> str:  # type: ignore[type-arg]
        content = operation["requestBody"]["content"]["application/json"]["schema"]
        return content["$ref"].rsplit("/", 1)[-1]

    token_create = paths["/api/v1/tokens/"]["post"]
    assert body(token_create) == "TokenCreateInput"
    assert "token" in components[ref(token_create, "201")]["properties"]
    assert "token" not in components["TokenOutput"]["properties"]
    invite = paths["/api/v1/users/"]["post"]
    assert body(invite) == "UserInviteInput"
    assert "set_password_url" in components[ref(invite, "201")]["properties"]
    reset = paths["/api/v1/users/{id}/reset-password/"]["post"]
    assert "requestBody" not in reset
    assert "set_password_url" in components[ref(reset, "200")]["properties"]
    assert {p["name"] for p in paths["/api/v1/users/"]["get"]["parameters"]} >= {
        "search",
        "role",
        "is_active",
    }
    assert "204" in paths["/api/v1/tokens/{id}/"]["delete"]["responses"]
