"""TOTP second factor: setup with a QR code, two-step login, disabling, admin removal, and the
tenant setting that makes it mandatory for admins."""

import re

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_tenants.utils import schema_context

from accounts.models import Role, User
from accounts.services import api_token_create
from configuration.services import settings_update
from tests.accounts.conftest import api, code_for, events, in_schema, token_for, wrong_code
from tests.conftest import PASSWORD, logged_in, tenant_client

MIDDLEWARE_PATH = "accounts.middleware.AdminSecondFactorMiddleware"


def device_of(tenant, user: User, *, confirmed: bool = True) -> TOTPDevice:  # type: ignore[no-untyped-def]
    with schema_context(tenant.schema_name):
        return TOTPDevice.objects.create(user=user, name="phone", confirmed=confirmed)


def password_step(client: Client, username: str, **extra: str):  # type: ignore[no-untyped-def]
    return client.post("/account/login/", {"username": username, "password": PASSWORD}, **extra)


def test_setup_shows_a_qr_code_and_the_key_and_needs_a_right_code(alpha, alpha_admin_client):
    page = alpha_admin_client.get("/account/2fa/").content.decode()
    assert "<svg" in page and 'class="qr"' in page
    device = in_schema(alpha, lambda: TOTPDevice.objects.get(confirmed=False))
    secret = re.search(r'id="otp-secret">([A-Z2-7 ]+)<', page)
    assert secret and len(secret.group(1).replace(" ", "")) == 32
    assert alpha_admin_client.get("/account/2fa/").content.decode().count(secret.group(1)) == 1

    refused = alpha_admin_client.post("/account/2fa/", {"action": "enable", "code": "12345"})
    assert "Type the 6 digits" in " ".join(refused.context["form"].errors["code"])
    wrong = alpha_admin_client.post(
        "/account/2fa/", {"action": "enable", "code": wrong_code(device)}
    )
    assert "This code is not right" in " ".join(wrong.context["form"].errors["code"])
    assert not in_schema(alpha, lambda: TOTPDevice.objects.filter(confirmed=True).exists())

    with schema_context(alpha.schema_name):
        TOTPDevice.objects.filter(pk=device.pk).update(throttling_failure_count=0)
    done = alpha_admin_client.post("/account/2fa/", {"action": "enable", "code": code_for(device)})
    assert done.status_code == 302 and done["Location"] == "/account/"
    assert in_schema(alpha, lambda: TOTPDevice.objects.get(pk=device.pk).confirmed)
    (enabled,) = events(alpha, action="otp.enable")
    assert enabled.actor_name == "alice"
    account = alpha_admin_client.get("/account/").content.decode()
    assert "You log in with your password and a code" in account
    assert "/account/tokens/" in account and "/account/2fa/" in account


def test_login_with_a_device_takes_a_code_before_the_session_exists(alpha, alpha_admin):
    device = device_of(alpha, alpha_admin)
    client = tenant_client(alpha)
    first = password_step(client, "alice")
    assert first.status_code == 302 and first["Location"] == "/account/login/verify/"
    assert "_auth_user_id" not in client.session
    assert client.get("/").status_code == 302  # not logged in yet
    assert events(alpha, action="login.success") == []

    verify = client.get("/account/login/verify/")
    assert b"Enter your code" in verify.content
    done = client.post("/account/login/verify/", {"code": code_for(device)})
    assert done.status_code == 302 and done["Location"] == "/"
    assert client.get("/").status_code == 200
    (success,) = events(alpha, action="login.success")
    assert success.details == {"otp": True} and success.actor_name == "alice"


def test_login_keeps_the_page_asked_for_through_the_code_step(alpha, alpha_admin):
    device = device_of(alpha, alpha_admin)
    client = tenant_client(alpha)
    client.post(
        "/account/login/?next=/users/",
        {"username": "alice", "password": PASSWORD, "next": "/users/"},
    )
    assert (
        client.post("/account/login/verify/", {"code": code_for(device)})["Location"] == "/users/"
    )


def test_wrong_codes_are_audited_and_lock_out_like_wrong_passwords(alpha, alpha_admin, settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 0  # django-otp's own delay would hide axes' count
    device = device_of(alpha, alpha_admin)
    client = tenant_client(alpha, REMOTE_ADDR="203.0.113.9")
    password_step(client, "alice")
    statuses = [
        client.post("/account/login/verify/", {"code": wrong_code(device)}).status_code
        for _ in range(5)
    ]
    assert statuses[:4] == [200] * 4 and statuses[4] == 429
    failures = events(alpha, action="login.failure", actor_name="alice")
    assert [e.details for e in failures] == [{"otp": True, "window": "15m"}]
    assert events(alpha, action="login.lockout", actor_name="alice")

    # The code step is gone and the password step is locked too.
    assert client.post("/account/login/verify/", {"code": code_for(device)}).status_code == 302
    assert password_step(client, "alice").status_code == 429
    assert client.get("/").status_code == 302
    assert events(alpha, action="login.success") == []


def test_a_wrong_code_shows_why_and_the_right_one_then_works(alpha, alpha_admin, settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    device = device_of(alpha, alpha_admin)
    client = tenant_client(alpha)
    password_step(client, "alice")
    wrong = client.post("/account/login/verify/", {"code": wrong_code(device)})
    assert "This code is not right" in " ".join(wrong.context["form"].errors["code"])
    assert client.post("/account/login/verify/", {"code": code_for(device)}).status_code == 302
    assert client.get("/").status_code == 200


def test_django_otp_throttle_is_explained(alpha, alpha_admin):
    device = device_of(alpha, alpha_admin)
    client = tenant_client(alpha)
    password_step(client, "alice")
    client.post("/account/login/verify/", {"code": wrong_code(device)})
    throttled = client.post("/account/login/verify/", {"code": code_for(device)})
    assert "Too many wrong codes in a row: wait" in throttled.content.decode()


def test_the_code_step_needs_a_password_step_first(alpha, alpha_admin):
    device_of(alpha, alpha_admin)
    client = tenant_client(alpha)
    response = client.post("/account/login/verify/", {"code": "123456"})
    assert response.status_code == 302 and response["Location"] == "/account/login/"
    assert client.get("/").status_code == 302


def test_disabling_needs_a_current_code(alpha, alpha_admin, settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    device = device_of(alpha, alpha_admin)
    client = tenant_client(alpha)
    password_step(client, "alice")
    client.post("/account/login/verify/", {"code": code_for(device)})

    page = client.get("/account/2fa/").content.decode()
    assert "Turn off two-factor authentication" in page and "<svg" not in page
    refused = client.post("/account/2fa/", {"action": "disable", "code": wrong_code(device)})
    assert refused.status_code == 200
    assert in_schema(alpha, lambda: TOTPDevice.objects.filter(user=alpha_admin).exists())
    assert (
        client.post("/account/2fa/", {"action": "disable", "code": code_for(device)}).status_code
        == 302
    )
    assert not in_schema(alpha, lambda: TOTPDevice.objects.filter(user=alpha_admin).exists())
    assert [e.actor_name for e in events(alpha, action="otp.disable")] == ["alice"]
    assert password_step(tenant_client(alpha), "alice")["Location"] == "/"


def test_an_admin_removes_a_lost_authenticator(alpha, alpha_admin_client, alpha_operator):
    device_of(alpha, alpha_operator)
    assert "on" in alpha_admin_client.get(f"/users/{alpha_operator.pk}/").content.decode()
    confirm = alpha_admin_client.get(f"/users/{alpha_operator.pk}/second-factor/remove/")
    assert b"Remove the authenticator of oscar?" in confirm.content
    assert (
        alpha_admin_client.post(f"/users/{alpha_operator.pk}/second-factor/remove/").status_code
        == 302
    )
    assert not in_schema(alpha, TOTPDevice.objects.exists)
    (removed,) = events(alpha, action="otp.disable")
    assert removed.details == {"by_admin": True} and removed.actor_name == "alice"
    assert password_step(tenant_client(alpha), "oscar")["Location"] == "/"


def test_staff_cannot_remove_someone_elses_authenticator(alpha, alpha_admin, alpha_operator):
    device_of(alpha, alpha_admin)
    client = logged_in(tenant_client(alpha), "oscar")
    assert client.post(f"/users/{alpha_admin.pk}/second-factor/remove/").status_code == 403
    assert in_schema(alpha, TOTPDevice.objects.count) == 1


def test_platform_super_admins_can_use_a_second_factor_too(db, superadmin):
    with schema_context("public"):
        device = TOTPDevice.objects.create(user=superadmin, name="phone", confirmed=True)
    client = Client(HTTP_HOST="localhost")
    assert password_step(client, superadmin.username)["Location"] == "/account/login/verify/"
    assert client.post("/account/login/verify/", {"code": code_for(device)}).status_code == 302
    assert client.get("/tenants/").status_code == 200


# --- mandatory for admins (a tenant setting of the configuration section) -----------------


@pytest.fixture
def admins_need_2fa(alpha, settings):  # type: ignore[no-untyped-def]
    """Turn the tenant setting on in alpha and make sure the middleware runs."""
    try:
        from configuration.models import TenantSettings
        from configuration.selectors import tenant_settings
    except ImportError:
        pytest.skip("the configuration app has no tenant_settings() yet")
    if not any(f.name == "require_admin_2fa" for f in TenantSettings._meta.get_fields()):
        pytest.skip("TenantSettings has no require_admin_2fa field yet")
    with schema_context(alpha.schema_name):
        row = tenant_settings()
        TenantSettings.objects.filter(pk=row.pk).update(require_admin_2fa=True)
    if MIDDLEWARE_PATH not in django_settings.MIDDLEWARE:
        middleware = list(django_settings.MIDDLEWARE)
        middleware.insert(
            middleware.index("django_otp.middleware.OTPMiddleware") + 1, MIDDLEWARE_PATH
        )
        settings.MIDDLEWARE = middleware


def test_required_2fa_holds_admins_at_the_setup_page_until_done(
    alpha, alpha_admin, alpha_operator, admins_need_2fa
):
    client = tenant_client(alpha)
    first = password_step(client, "alice")
    assert first.status_code == 302 and first["Location"] == "/account/2fa/"
    for path in ("/", "/users/", "/account/", "/account/tokens/", "/audit/"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"] == "/account/2fa/", path
    assert client.get("/api/v1/users/").status_code == 403
    setup = client.get("/account/2fa/")
    assert setup.status_code == 200 and b"requires admins to use two-factor" in setup.content

    device = in_schema(alpha, lambda: TOTPDevice.objects.get(user=alpha_admin))
    client.post("/account/2fa/", {"action": "enable", "code": code_for(device)})
    assert client.get("/users/").status_code == 200

    page = client.get("/account/2fa/").content.decode()
    assert "cannot be turned off" in page
    kept = client.post("/account/2fa/", {"action": "disable", "code": code_for(device)})
    assert "cannot be turned off" in kept.content.decode()
    assert in_schema(alpha, lambda: TOTPDevice.objects.filter(user=alpha_admin).exists())

    # Staff roles are not held, and neither are the admins of another tenant.
    assert logged_in(tenant_client(alpha), "oscar").get("/").status_code == 200


def test_required_2fa_does_not_reach_other_tenants(beta, make_user, admins_need_2fa):
    make_user(beta, username="bob")
    assert logged_in(tenant_client(beta), "bob").get("/users/").status_code == 200


def test_required_2fa_logs_out_admin_sessions_that_predate_their_device(
    alpha, alpha_admin, alpha_admin_client, admins_need_2fa
):
    device_of(alpha, alpha_admin)  # set up elsewhere after this session began
    client = tenant_client(alpha)  # a client that loads the middleware as now configured
    client.cookies = alpha_admin_client.cookies
    response = client.get("/users/")
    assert response.status_code == 302 and response["Location"] == "/account/login/"
    assert client.get("/account/").status_code == 302


def test_requiring_admin_2fa_revokes_the_admins_full_tokens(alpha, beta, alpha_admin, make_user):
    """Full admin tokens were minted with a password alone; once the tenant requires a second
    factor they stop working. Narrower tokens, other roles' and other tenants' stay."""
    operator = make_user(alpha, username="olga", role=Role.OPERATOR)
    beta_admin = make_user(beta, username="bea", role=Role.ADMIN)
    admin_full = token_for(alpha, alpha_admin)
    admin_read = token_for(alpha, alpha_admin, scope="read")
    operator_full = token_for(alpha, operator)
    beta_full = token_for(beta, beta_admin)
    with schema_context(alpha.schema_name):
        settings_update(tenant=alpha, actor=alpha_admin, require_admin_2fa=True)

    assert api(alpha, admin_full).get("/api/v1/me/").status_code == 401
    assert api(alpha, operator_full).get("/api/v1/me/").status_code == 200
    # The admin's narrower token waits for the second factor, then works again.
    held = api(alpha, admin_read).get("/api/v1/me/")
    assert held.status_code == 403 and "/account/2fa/" in held.json()["detail"]
    device_of(alpha, alpha_admin)
    assert api(alpha, admin_read).get("/api/v1/me/").status_code == 200
    assert api(beta, beta_full).get("/api/v1/me/").status_code == 200
    (revoked,) = events(alpha, action="token.revoke")
    assert revoked.details["reason"] == "admins-require-2fa"
    assert revoked.details["owner"] == alpha_admin.username
    assert events(beta, action="token.revoke") == []


def test_super_admins_are_held_at_the_setup_page_by_the_platform_setting(
    alpha, alpha_admin, superadmin, settings
):
    settings.PORTAL_SUPERADMIN_2FA = True
    platform = Client(HTTP_HOST="localhost")
    first = platform.post(
        "/account/login/", {"username": superadmin.username, "password": PASSWORD}
    )
    assert first.status_code == 302 and first["Location"] == "/account/2fa/"
    for path in ("/tenants/", "/tenants/new/", f"/tenants/{alpha.slug}/"):
        response = platform.get(path)
        assert response.status_code == 302 and response["Location"] == "/account/2fa/", path
    assert b"requires admins to use two-factor" in platform.get("/account/2fa/").content
    # A tenant's own admins answer to their tenant's setting, not to the platform's.
    assert logged_in(tenant_client(alpha), "alice").get("/users/").status_code == 200

    # Nor is a platform token the way around it.
    with schema_context("public"):
        raw = api_token_create(user=superadmin, name="fleet automation")[1]
    token_client = Client(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert token_client.get("/api/v1/tenants/").status_code == 403

    settings.PORTAL_SUPERADMIN_2FA = False
    assert platform.get("/tenants/").status_code == 200
    assert token_client.get("/api/v1/tenants/").status_code == 200


def test_an_admin_token_waiting_for_2fa_is_403_on_dicomweb_too(alpha, alpha_admin):
    raw = token_for(alpha, alpha_admin, scope="read")
    with schema_context(alpha.schema_name):
        settings_update(tenant=alpha, actor=alpha_admin, require_admin_2fa=True)
    answer = api(alpha, raw).get("/dicom-web/studies")
    assert answer.status_code == 403 and b"/account/2fa/" in answer.content
