"""/users/ in the browser's shoes: list, invite, edit, deactivate, reset, the last-admin rule."""

import re

import pytest
from django.core import mail
from django_tenants.utils import schema_context

from accounts.models import Role, User
from tenants.models import Tenant
from tests.accounts.conftest import api, events, in_schema, token_for
from tests.conftest import PASSWORD, logged_in, tenant_client

LINK_RE = re.compile(r"https://alpha\.localhost(/account/set-password/[^\"'\s<]+)")


def user(tenant: Tenant, username: str) -> User:
    return in_schema(tenant, lambda: User.objects.get(username=username))


def test_list_searches_and_filters_and_shows_only_its_own_tenant(
    alpha, beta, alpha_admin_client, make_user, django_assert_max_num_queries
):
    make_user(alpha, username="carol", role=Role.VIEWER)
    gone = make_user(alpha, username="dave", role=Role.OPERATOR)
    with schema_context(alpha.schema_name):
        User.objects.filter(pk=gone.pk).update(is_active=False, email="dave@ward.example")
    make_user(beta, username="carol-at-beta", role=Role.VIEWER)

    # A constant per page (routing, session, user, tenant settings, the page and its count),
    # never one per user listed.
    with django_assert_max_num_queries(16):
        page = alpha_admin_client.get("/users/").content.decode()
    assert "carol" in page and "dave" in page and "alice" in page
    assert "carol-at-beta" not in page

    def names(**query: str) -> set[str]:
        response = alpha_admin_client.get("/users/", query)
        return {u.username for u in response.context["users"]}

    assert names(q="ward.example") == {"dave"}
    assert names(q="CAR") == {"carol"}
    assert names(role="operator") == {"dave"}
    assert names(status="deactivated") == {"dave"}
    assert "dave" not in names(status="active")
    assert names(q="beta") == set()
    empty = alpha_admin_client.get("/users/", {"q": "nobody-has-this"}).content.decode()
    assert "No users match" in empty


def test_invite_shows_the_link_once_mails_it_and_the_link_sets_a_password(
    alpha, alpha_admin_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = alpha_admin_client.post(
            "/users/invite/",
            {
                "username": "nina",
                "email": "nina@alpha.example",
                "first_name": "Nina",
                "last_name": "Nurse",
                "role": "viewer",
            },
        )
    assert response.status_code == 200
    page = response.content.decode()
    link = LINK_RE.search(page)
    assert link, page
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["nina@alpha.example"]
    assert link.group(0) in mail.outbox[0].body
    nina = user(alpha, "nina")
    assert nina.role == Role.VIEWER and nina.get_full_name() == "Nina Nurse"
    assert not nina.has_usable_password()
    (invite,) = events(alpha, action="user.invite")
    assert invite.actor_name == "alice" and invite.object_id == str(nina.pk)
    assert invite.details["role"] == "viewer"
    # Shown once: the user's page never shows it again.
    assert (
        "/account/set-password/"
        not in alpha_admin_client.get(f"/users/{nina.pk}/").content.decode()
    )

    client = tenant_client(alpha)
    form = client.get(link.group(1), follow=True)
    assert b"Set your password" in form.content
    done = client.post(
        form.redirect_chain[-1][0],
        {"new_password1": "a-fresh-passphrase", "new_password2": "a-fresh-passphrase"},
    )
    assert done.status_code == 302
    (changed,) = events(alpha, action="password.change")
    assert changed.actor_name == "nina" and changed.details == {"via": "link"}
    assert (
        client.post(
            "/account/login/", {"username": "nina", "password": "a-fresh-passphrase"}
        ).status_code
        == 302
    )


def test_the_invitation_link_refuses_weak_passwords_and_stays_usable(alpha, alpha_admin_client):
    response = alpha_admin_client.post(
        "/users/invite/", {"username": "wendy", "email": "w@alpha.example", "role": "viewer"}
    )
    assert "no-store" in response["Cache-Control"]
    link = LINK_RE.search(response.content.decode())
    assert link
    client = tenant_client(alpha)
    form_url = client.get(link.group(1), follow=True).redirect_chain[-1][0]
    weak = client.post(form_url, {"new_password1": "wendy1234", "new_password2": "wendy1234"})
    errors = " ".join(weak.context["form"].errors["new_password2"])
    assert "too short" in errors and "too similar to the username" in errors
    assert not user(alpha, "wendy").has_usable_password()
    strong = client.post(
        form_url, {"new_password1": "long-enough-phrase", "new_password2": "long-enough-phrase"}
    )
    assert strong.status_code == 302


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"username": "ALICE"}, "username", "A user with this username exists"),
        ({"username": "bad name!"}, "username", "Enter a valid username"),
        ({"email": "not-an-address"}, "email", "valid email"),
        ({"email": ""}, "email", "required"),
        ({"role": "superhero"}, "role", "valid choice"),
    ],
)
def test_invite_validation_rejects_with_a_message_and_saves_nothing(
    alpha, alpha_admin_client, data, field, message
):
    before = in_schema(alpha, User.objects.count)
    form = {"username": "newbie", "email": "n@alpha.example", "role": "viewer", **data}
    response = alpha_admin_client.post("/users/invite/", form)
    assert response.status_code == 200
    assert message in " ".join(response.context["form"].errors[field])
    assert in_schema(alpha, User.objects.count) == before
    assert mail.outbox == []
    assert events(alpha, action="user.invite") == []


def test_invite_and_reactivation_beyond_the_user_quota_are_refused(
    alpha, alpha_admin_client, make_user
):
    sleeper = make_user(alpha, username="sleeper", role=Role.VIEWER)
    with schema_context(alpha.schema_name):
        User.objects.filter(pk=sleeper.pk).update(is_active=False)
        active = User.objects.filter(is_active=True).count()
    Tenant.objects.filter(pk=alpha.pk).update(quota_users=active)

    response = alpha_admin_client.post(
        "/users/invite/", {"username": "one-too-many", "email": "x@alpha.example", "role": "viewer"}
    )
    assert response.status_code == 200
    assert f"reached its quota of {active} active users" in response.content.decode()
    assert not in_schema(alpha, User.objects.filter(username="one-too-many").exists)

    refused = alpha_admin_client.post(f"/users/{sleeper.pk}/reactivate/", follow=True)
    assert "reached its quota" in refused.content.decode()
    assert not user(alpha, "sleeper").is_active


def test_edit_changes_names_and_role_and_audits_the_role_change(
    alpha, alpha_admin_client, alpha_operator
):
    form = alpha_admin_client.get(f"/users/{alpha_operator.pk}/edit/")
    assert form.context["form"].initial["role"] == "operator"
    response = alpha_admin_client.post(
        f"/users/{alpha_operator.pk}/edit/",
        {"email": "oscar@alpha.example", "first_name": "Oscar", "last_name": "O", "role": "viewer"},
    )
    assert response.status_code == 302 and response["Location"] == f"/users/{alpha_operator.pk}/"
    oscar = user(alpha, "oscar")
    assert (oscar.email, oscar.role) == ("oscar@alpha.example", Role.VIEWER)
    (change,) = events(alpha, action="user.role_change")
    assert change.details == {"from": "operator", "to": "viewer"}
    (update,) = events(alpha, action="user.update")
    assert update.details["changes"]["email"][1] == "oscar@alpha.example"

    invalid = alpha_admin_client.post(
        f"/users/{alpha_operator.pk}/edit/", {"email": "nope", "role": "admin"}
    )
    assert "valid email" in " ".join(invalid.context["form"].errors["email"])
    assert user(alpha, "oscar").role == Role.VIEWER


def test_the_last_active_admin_can_be_neither_demoted_nor_deactivated(
    alpha, alpha_admin, alpha_admin_client
):
    founder = user(alpha, "admin")  # made with the tenant
    assert alpha_admin_client.post(f"/users/{founder.pk}/deactivate/").status_code == 302
    assert not user(alpha, "admin").is_active

    demote = alpha_admin_client.post(
        f"/users/{alpha_admin.pk}/edit/",
        {"email": "a@alpha.example", "role": "viewer"},
    )
    assert demote.status_code == 200
    assert "alice is the last active admin" in " ".join(demote.context["form"].errors["role"])
    deactivate = alpha_admin_client.post(f"/users/{alpha_admin.pk}/deactivate/", follow=True)
    assert "alice is the last active admin" in deactivate.content.decode()
    alice = user(alpha, "alice")
    assert alice.is_active and alice.role == Role.ADMIN
    assert events(alpha, action="user.deactivate", object_id=str(alpha_admin.pk)) == []

    # With a second admin again, alice may step down.
    assert alpha_admin_client.post(f"/users/{founder.pk}/reactivate/").status_code == 302
    stepped_down = alpha_admin_client.post(
        f"/users/{alpha_admin.pk}/edit/", {"email": "a@alpha.example", "role": "viewer"}
    )
    assert stepped_down.status_code == 302 and stepped_down["Location"] == "/"
    assert user(alpha, "alice").role == Role.VIEWER


def test_deactivation_ends_logins_sessions_and_tokens_and_reactivation_restores_them(
    alpha, alpha_admin_client, alpha_operator
):
    session = logged_in(tenant_client(alpha), "oscar")
    raw = token_for(alpha, alpha_operator)
    confirm = alpha_admin_client.get(f"/users/{alpha_operator.pk}/deactivate/")
    assert b"Deactivate oscar?" in confirm.content and user(alpha, "oscar").is_active

    assert alpha_admin_client.post(f"/users/{alpha_operator.pk}/deactivate/").status_code == 302
    assert not user(alpha, "oscar").is_active
    assert session.get("/").status_code == 302  # back to the login page
    refused = tenant_client(alpha).post(
        "/account/login/", {"username": "oscar", "password": PASSWORD}
    )
    assert refused.status_code == 200
    me = api(alpha, raw).get("/api/v1/me/")
    assert me.status_code == 401 and "deactivated" in me.json()["detail"]
    assert [e.actor_name for e in events(alpha, action="user.deactivate")] == ["alice"]

    assert alpha_admin_client.post(f"/users/{alpha_operator.pk}/reactivate/").status_code == 302
    assert api(alpha, raw).get("/api/v1/me/").status_code == 200
    logged_in(tenant_client(alpha), "oscar")
    assert len(events(alpha, action="user.reactivate")) == 1


def test_password_reset_ends_sessions_and_gives_a_new_link(
    alpha, alpha_admin_client, alpha_operator, django_capture_on_commit_callbacks
):
    session = logged_in(tenant_client(alpha), "oscar")
    with django_capture_on_commit_callbacks(execute=True):
        response = alpha_admin_client.post(f"/users/{alpha_operator.pk}/reset-password/")
    link = LINK_RE.search(response.content.decode())
    assert link
    assert mail.outbox[0].to == ["someone@example.org"] and link.group(0) in mail.outbox[0].body
    assert session.get("/").status_code == 302
    assert not user(alpha, "oscar").has_usable_password()
    old = tenant_client(alpha).post("/account/login/", {"username": "oscar", "password": PASSWORD})
    assert old.status_code == 200
    (reset,) = events(alpha, action="user.password_reset")
    assert reset.actor_name == "alice" and reset.object_id == str(alpha_operator.pk)
    assert b"Set your password" in tenant_client(alpha).get(link.group(1), follow=True).content


def test_staff_without_users_manage_cannot_change_anyone(alpha, alpha_admin, alpha_operator):
    client = logged_in(tenant_client(alpha), "oscar")
    assert client.get("/users/").status_code == 403
    attempts = [
        ("/users/invite/", {"username": "sneaky", "email": "s@x.example", "role": "admin"}),
        (f"/users/{alpha_operator.pk}/edit/", {"email": "o@x.example", "role": "admin"}),
        (f"/users/{alpha_admin.pk}/deactivate/", {}),
        (f"/users/{alpha_admin.pk}/reset-password/", {}),
        (f"/users/{alpha_admin.pk}/", {"name": "stolen", "scope": "full"}),
    ]
    for path, data in attempts:
        assert client.post(path, data).status_code == 403, path
    assert not in_schema(alpha, User.objects.filter(username="sneaky").exists)
    assert user(alpha, "oscar").role == Role.OPERATOR
    alice = user(alpha, "alice")
    assert alice.is_active and alice.has_usable_password()
    assert in_schema(alpha, lambda: alice.api_tokens.count()) == 0
    assert events(alpha, action__startswith="user.") == []


def test_user_pages_of_another_tenant_are_not_found(alpha, beta, alpha_admin_client, make_user):
    stranger = make_user(beta, username="stranger")
    with schema_context(alpha.schema_name):
        missing = (User.objects.order_by("-pk").values_list("pk", flat=True).first() or 0) + 1000
    with schema_context(beta.schema_name):
        User.objects.filter(pk=stranger.pk).update(id=missing)
    assert alpha_admin_client.get(f"/users/{missing}/").status_code == 404
    assert alpha_admin_client.post(f"/users/{missing}/deactivate/").status_code == 404
    assert in_schema(beta, lambda: User.objects.get(pk=missing).is_active)


def test_users_pages_are_not_on_the_platform_site(superadmin_client):
    assert superadmin_client.get("/users/").status_code == 404
