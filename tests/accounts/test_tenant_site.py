"""The tenant site shell: login, logout, passwords, set-password links, dashboard figures."""

import re

from django.test import Client
from django_tenants.utils import schema_context

from accounts.models import User
from studies.models import StorageMedium
from tenants.links import tenant_base_url
from tests.accounts.conftest import events
from tests.conftest import PASSWORD, logged_in, tenant_client


def test_login_rotates_the_session_and_logout_ends_it(alpha, alpha_admin):
    client = tenant_client(alpha)
    client.get("/account/login/")
    before = client.cookies.get("portal_session_alpha")
    logged_in(client, alpha_admin.username)
    after = client.cookies["portal_session_alpha"].value
    assert before is None or before.value != after
    assert client.get("/").status_code == 200
    assert client.post("/account/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_wrong_password_is_refused_without_detail(alpha, alpha_admin):
    response = tenant_client(alpha).post(
        "/account/login/", {"username": alpha_admin.username, "password": "wrong"}
    )
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()


def test_dashboard_shows_real_figures_of_its_own_tenant_only(
    alpha, beta, alpha_admin_client, make_user
):
    make_user(alpha, username="second")
    make_user(beta, username="beta-only")
    with schema_context(alpha.schema_name):
        StorageMedium.objects.filter(name="default").update(
            used_bytes=3 * 1024**3, capacity_bytes=4 * 1024**3
        )
        users = User.objects.filter(is_active=True).count()
    page = alpha_admin_client.get("/").content.decode()
    tile = re.search(r'<span class="figure">(\d+)</span><span>active user', page)
    assert tile and int(tile.group(1)) == users
    assert "3.0\xa0GiB of 4.0\xa0GiB (75.0 %)" in page
    assert "beta-only" not in page
    assert "/t_beta/" not in page and "Beta Hospital" not in page


def test_password_change_keeps_the_session(alpha, alpha_admin_client):
    response = alpha_admin_client.post(
        "/account/password/",
        {
            "old_password": PASSWORD,
            "new_password1": "another-long-passphrase",
            "new_password2": "another-long-passphrase",
        },
    )
    assert response.status_code == 302
    assert alpha_admin_client.get("/").status_code == 200
    (changed,) = events(alpha, action="password.change")
    assert changed.actor_name == "alice" and changed.details == {"via": "account"}
    assert changed.object_id == str(changed.actor_id)
    with schema_context(alpha.schema_name):
        assert User.objects.get(username="alice").check_password("another-long-passphrase")


def test_weak_passwords_are_refused_by_the_validators(alpha, alpha_admin_client):
    response = alpha_admin_client.post(
        "/account/password/",
        {"old_password": PASSWORD, "new_password1": "12345678", "new_password2": "12345678"},
    )
    assert response.status_code == 200
    errors = " ".join(response.context["form"].errors["new_password2"])
    assert "too short" in errors and "entirely numeric" in errors


def test_set_password_link_works_once_and_only_on_its_tenant(new_tenant, alpha):
    creation = new_tenant("linked")
    path = creation.set_password_url.removeprefix(tenant_base_url(creation.tenant))
    # The same path on another tenant: a different schema, so the token is void there.
    assert b"no longer valid" in tenant_client(alpha).get(path, follow=True).content

    client = Client(HTTP_HOST="linked.localhost")
    form_page = client.get(path, follow=True)
    assert b"Set your password" in form_page.content
    set_url = form_page.redirect_chain[-1][0]
    done = client.post(
        set_url,
        {"new_password1": "a-brand-new-passphrase", "new_password2": "a-brand-new-passphrase"},
    )
    assert done.status_code == 302 and done["Location"] == "/account/login/"
    assert (
        client.post(
            "/account/login/", {"username": "admin", "password": "a-brand-new-passphrase"}
        ).status_code
        == 302
    )
    again = Client(HTTP_HOST="linked.localhost").get(path, follow=True)
    assert b"no longer valid" in again.content


def test_unknown_page_is_a_friendly_404(alpha_admin_client):
    response = alpha_admin_client.get("/no-such-page/")
    assert response.status_code == 404
