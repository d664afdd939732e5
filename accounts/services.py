"""Writes on users, tokens, second factors and logins of the active schema, each audited."""

import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib import auth
from django.contrib.auth.signals import user_login_failed
from django.contrib.auth.tokens import PasswordResetTokenGenerator
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import get_resolver
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from django_otp import login as otp_login
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import ApiToken, Role, TokenScope, User
from accounts.selectors import (
    PENDING_LOGIN_KEY,
    PENDING_LOGIN_SECONDS,
    active_user_count,
    admin_second_factor_required,
    is_site_admin,
    token_scopes_for,
)
from audit.models import Outcome
from audit.services import audit_record
from portal.routing import bind_session_to_schema, client_address
from portal.schemas import current_schema
from tenants.links import tenant_url
from tenants.models import Tenant

logger = logging.getLogger(__name__)

LAST_ADMIN_MESSAGE = (
    "{username} is the last active admin: make another user admin before demoting or "
    "deactivating them."
)
WRONG_CODE_MESSAGE = "This code is not right. Type the 6 digits your authenticator app shows now."


class SchemaBoundTokenGenerator(PasswordResetTokenGenerator):
    """Password links that also hash the schema: a link made for tenant A is void in B."""

    key_salt = "accounts.SchemaBoundTokenGenerator"

    def _make_hash_value(self, user, timestamp):
        return f"{current_schema()}:{super()._make_hash_value(user, timestamp)}"


set_password_tokens = SchemaBoundTokenGenerator()


@dataclass(frozen=True)
class SetPasswordLink:
    """A user and their one-time set-password URL, shown once and mailed, never stored."""

    user: User
    url: str


def user_create(
    *,
    username: str,
    email: str,
    role: str = Role.VIEWER,
    password: str | None = None,
    is_superuser: bool = False,
) -> User:
    """A user of the active schema; without a password, they set one through a link."""
    user = User(
        username=username, email=email, role=role, is_superuser=is_superuser, is_staff=is_superuser
    )
    if password:
        user.set_password(password)
    else:
        user.set_unusable_password()
    user.full_clean(exclude=["password"])
    user.save()
    return user


def user_set_password_path(*, user: User) -> str:
    """The path (below the tenant's URL prefix) of the user's one-time set-password page."""
    uidb64 = urlsafe_base64_encode(force_bytes(user.pk))
    token = set_password_tokens.make_token(user)
    # The tenant URLconf without any script prefix: the caller adds the tenant's base URL.
    path = get_resolver("portal.urls_tenants").reverse("set_password", uidb64=uidb64, token=token)
    return "/" + path


def set_password_link_expiry() -> datetime:
    """When a link issued now stops working (PASSWORD_RESET_TIMEOUT)."""
    return timezone.now() + timedelta(seconds=settings.PASSWORD_RESET_TIMEOUT)


def mail_link_after_commit(
    *, tenant: Tenant, user: User, url: str, invitation: bool, opening: str = ""
) -> None:
    """Mail the link once the user row is committed; the admin sees the link either way.
    `opening`: the first sentence, when not the invitation's or the reset's."""
    hours = settings.PASSWORD_RESET_TIMEOUT // 3600
    if opening:
        subject = f"Your account at {tenant.name}"
    elif invitation:
        subject = f"Your account at {tenant.name}"
        opening = f"An admin of {tenant.name} created an account for you ({user.username})."
    else:
        subject = f"Set a new password for {tenant.name}"
        opening = f"An admin of {tenant.name} reset the password of your account ({user.username})."
    body = (
        f"{opening}\n\nChoose your password here (the link works once and expires in "
        f"{hours} hours):\n\n{url}\n"
    )

    def send() -> None:
        try:
            send_mail(subject, body, None, [user.email])
        except Exception:  # a mail outage must not turn a done invitation into an error page
            logger.exception("could not mail the set-password link of %s", user.username)

    if user.email:
        transaction.on_commit(send)


def _ensure_user_quota(tenant: Tenant) -> None:
    """Refuse one more active user beyond the tenant's quota; holds the tenant row so that
    two admins inviting at the same moment cannot both take the last place."""
    quota = (
        Tenant.objects.select_for_update().values_list("quota_users", flat=True).get(pk=tenant.pk)
    )
    if active_user_count() >= quota:
        raise ValidationError(
            f"{tenant.name} has reached its quota of {quota} active users. Deactivate a user "
            "or ask the platform operator for a higher quota."
        )


def _lock_active_admins() -> list[int]:
    """Lock every active admin, always in the same order, before touching one of them, so that
    two admins demoting each other at the same moment cannot both succeed (or deadlock)."""
    return list(
        User.objects.select_for_update()
        .filter(is_active=True, role=Role.ADMIN)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def user_invite(
    *,
    request: HttpRequest | None,
    tenant: Tenant,
    username: str,
    email: str,
    role: str,
    first_name: str = "",
    last_name: str = "",
) -> SetPasswordLink:
    """A new user without a password and the link that lets them choose one."""
    if not email:
        raise ValidationError({"email": "An invitation needs an e-mail address."})
    with transaction.atomic():
        _ensure_user_quota(tenant)
        if User.objects.filter(username__iexact=username).exists():
            raise ValidationError(
                {"username": "A user with this username exists (deactivated users keep theirs)."}
            )
        user = User(
            username=username, email=email, first_name=first_name, last_name=last_name, role=role
        )
        user.set_unusable_password()
        user.full_clean(exclude=["password"])
        user.save()
        audit_record(
            action="user.invite",
            request=request,
            target=user,
            details={"username": username, "email": email, "role": role},
        )
        url = tenant_url(tenant, user_set_password_path(user=user))
        mail_link_after_commit(tenant=tenant, user=user, url=url, invitation=True)
    return SetPasswordLink(user=user, url=url)


def user_update(
    *,
    request: HttpRequest | None,
    user: User,
    email: str | None = None,
    first_name: str | None = None,
    last_name: str | None = None,
    role: str | None = None,
) -> User:
    """Change a user's e-mail, names or role; the last active admin keeps their role."""
    with transaction.atomic():
        admins = _lock_active_admins()
        user = User.objects.select_for_update().get(pk=user.pk)
        changes: dict[str, list[str]] = {}
        for field, value in (
            ("email", email),
            ("first_name", first_name),
            ("last_name", last_name),
        ):
            if value is not None and getattr(user, field) != value:
                changes[field] = [getattr(user, field), value]
                setattr(user, field, value)
        old_role = user.role
        if role is not None and role != old_role:
            if old_role == Role.ADMIN and admins == [user.pk]:
                raise ValidationError({"role": LAST_ADMIN_MESSAGE.format(username=user.username)})
            user.role = role
        if not changes and user.role == old_role:
            return user
        user.full_clean(exclude=["password"])
        user.save()
        if changes:
            audit_record(
                action="user.update", request=request, target=user, details={"changes": changes}
            )
        if user.role != old_role:
            audit_record(
                action="user.role_change",
                request=request,
                target=user,
                details={"from": old_role, "to": user.role},
            )
    return user


def user_deactivate(*, request: HttpRequest | None, user: User) -> User:
    """Block a user's logins, sessions and tokens; the row stays for the audit log."""
    with transaction.atomic():
        admins = _lock_active_admins()
        user = User.objects.select_for_update().get(pk=user.pk)
        if not user.is_active:
            return user
        if user.role == Role.ADMIN and admins == [user.pk]:
            raise ValidationError(LAST_ADMIN_MESSAGE.format(username=user.username))
        user.is_active = False
        user.save(update_fields=["is_active"])
        audit_record(action="user.deactivate", request=request, target=user)
    return user


def user_reactivate(*, request: HttpRequest | None, tenant: Tenant, user: User) -> User:
    """Let a deactivated user in again, within the tenant's user quota."""
    with transaction.atomic():
        user = User.objects.select_for_update().get(pk=user.pk)
        if user.is_active:
            return user
        _ensure_user_quota(tenant)
        user.is_active = True
        user.save(update_fields=["is_active"])
        audit_record(action="user.reactivate", request=request, target=user)
    return user


def user_password_reset(
    *, request: HttpRequest | None, tenant: Tenant, user: User
) -> SetPasswordLink:
    """Make the password unusable (which ends the user's sessions) and issue a new link."""
    with transaction.atomic():
        user = User.objects.select_for_update().get(pk=user.pk)
        if not user.is_active:
            raise ValidationError(f"Reactivate {user.username} before resetting their password.")
        user.set_unusable_password()
        user.save(update_fields=["password"])
        audit_record(action="user.password_reset", request=request, target=user)
        url = tenant_url(tenant, user_set_password_path(user=user))
        mail_link_after_commit(tenant=tenant, user=user, url=url, invitation=False)
    return SetPasswordLink(user=user, url=url)


def api_token_create(
    *,
    user: User,
    name: str,
    scope: str = TokenScope.FULL,
    expires_at: datetime | None = None,
    request: HttpRequest | None = None,
) -> tuple[ApiToken, str]:
    """A new token and its raw value, which is shown once and never stored."""
    errors: dict[str, str] = {}
    name = name.strip()
    if not name:
        errors["name"] = "Name the token after what uses it, e.g. “CT scanner uploads”."
    actor = getattr(request, "user", None)
    by_someone_else = actor is not None and actor.is_authenticated and actor.pk != user.pk
    scopes = token_scopes_for(user, by_someone_else=by_someone_else)
    if scope not in scopes:
        allowed = ", ".join(str(s.label).lower() for s in scopes) or "none"
        errors["scope"] = (
            f"A token you create for {user.get_username()} can be: {allowed}. Only they can "
            "create a full token, which acts with all their rights."
            if by_someone_else and scope == TokenScope.FULL
            else f"A {user.get_role_display().lower()} token can be: {allowed}."
        )
    if expires_at is None and settings.PORTAL_TOKEN_DEFAULT_DAYS > 0:
        expires_at = timezone.now() + timedelta(days=settings.PORTAL_TOKEN_DEFAULT_DAYS)
    elif expires_at is not None and expires_at <= timezone.now():
        errors["expires_at"] = "The expiry date has passed; choose a later one or none."
    if errors:
        raise ValidationError(errors)
    if not user.is_active:
        raise ValidationError(f"{user.username} is deactivated; their tokens would not work.")
    raw, key_id, key_hash = ApiToken.generate()
    token = ApiToken(
        user=user, name=name, key_id=key_id, key_hash=key_hash, scope=scope, expires_at=expires_at
    )
    token.full_clean()
    with transaction.atomic():
        token.save()
        audit_record(
            action="token.create",
            request=request,
            target=token,
            details={
                "name": name,
                "owner": user.username,
                "scope": scope,
                "key_id": key_id,
                "expires_at": expires_at.isoformat() if expires_at else None,
            },
        )
    return token, raw


def api_token_revoke(*, request: HttpRequest | None, token: ApiToken, reason: str = "") -> ApiToken:
    """Stop a token from working, for good; revoking twice changes nothing."""
    with transaction.atomic():
        token = ApiToken.objects.select_for_update().select_related("user").get(pk=token.pk)
        if token.revoked_at is not None:
            return token
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit_record(
            action="token.revoke",
            request=request,
            target=token,
            details={
                "name": token.name,
                "owner": token.user.username,
                "key_id": token.key_id,
                **({"reason": reason} if reason else {}),
            },
        )
    return token


def admin_full_tokens_revoke(*, request: HttpRequest | None) -> int:
    """The tenant now requires a second factor of its admins: their `full` tokens, created
    when a password alone was enough, stop working (each revocation audited). They create new
    ones once their authenticator is set up. Returns how many were revoked."""
    tokens = ApiToken.objects.filter(
        user__role=Role.ADMIN, scope=TokenScope.FULL, revoked_at__isnull=True
    )
    revoked = 0
    for token in tokens.select_related("user").order_by("pk"):
        api_token_revoke(request=request, token=token, reason="admins-require-2fa")
        revoked += 1
    return revoked


def otp_device_prepare(*, user: User) -> TOTPDevice:
    """The unconfirmed authenticator the setup page shows, reused until it is confirmed.

    Not audited: an unconfirmed device changes nothing about how the user logs in.
    """
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("id").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=False)
    return device


def _verify_code(devices: QuerySet[TOTPDevice], code: str) -> TOTPDevice | None:
    """The device that accepts the code. Runs in its own transaction so that a wrong code's
    throttling counter is kept even though the caller then refuses."""
    with transaction.atomic():
        for device in devices.select_for_update().order_by("id"):
            if device.verify_token(code):
                return device
    return None


def otp_enable(*, request: HttpRequest, user: User, code: str) -> TOTPDevice:
    """Confirm the prepared authenticator with a code; this session counts as verified."""
    if TOTPDevice.objects.filter(user=user, confirmed=True).exists():
        raise ValidationError("Two-factor authentication is already on.")
    device = _verify_code(TOTPDevice.objects.filter(user=user, confirmed=False), code)
    if device is None:
        raise ValidationError({"code": WRONG_CODE_MESSAGE})
    with transaction.atomic():
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        TOTPDevice.objects.filter(user=user, confirmed=False).delete()
        audit_record(action="otp.enable", request=request, target=user)
    otp_login(request, device)
    return device


def otp_disable(*, request: HttpRequest, user: User, code: str) -> None:
    """Turn the second factor off; proving possession of it with a current code."""
    if is_site_admin(user) and admin_second_factor_required():
        raise ValidationError(
            "This site requires a second factor for admins: it cannot be turned off."
        )
    if _verify_code(TOTPDevice.objects.filter(user=user, confirmed=True), code) is None:
        raise ValidationError({"code": WRONG_CODE_MESSAGE})
    with transaction.atomic():
        TOTPDevice.objects.filter(user=user).delete()
        audit_record(action="otp.disable", request=request, target=user)


def otp_remove(*, request: HttpRequest | None, user: User) -> None:
    """An admin removes a user's lost authenticator; the user logs in with the password alone
    (or must set up a new one where the tenant requires it)."""
    with transaction.atomic():
        removed, _ = TOTPDevice.objects.filter(user=user).delete()
        if removed:
            audit_record(
                action="otp.disable", request=request, target=user, details={"by_admin": True}
            )


def login_complete(
    *,
    request: HttpRequest,
    user: User,
    device: TOTPDevice | None = None,
    backend: str | None = None,
) -> None:
    """Log the user in (a new session key, bound to this schema) and audit it."""
    auth.login(request, user, backend=backend)
    if device is not None:
        otp_login(request, device)
    bind_session_to_schema(request)
    audit_record(
        action="login.success", request=request, target=user, details={"otp": device is not None}
    )


# Failed logins are written to the audit log coalesced, per fixed window: the first failure of
# each username from each address, at most ADDRESS_ROWS usernames per address and TENANT_ROWS
# rows per tenant; past those, one row each time a count reaches 10, 100, 1000... Anyone on the
# internet can fail a login, and the log must not grow at the rate they choose.
FAILURE_WINDOW = 15  # minutes
ADDRESS_ROWS = 20
TENANT_ROWS = 300


def _clock() -> float:
    return time.time()


def _window_count(group: str, key: str, seconds: int = FAILURE_WINDOW * 60) -> int:
    """How many times `key` was seen in this window of `seconds`, this time included (per
    schema: the cache key function prefixes it). 1 if the cache cannot count, so the row is
    written."""
    slot = int(_clock() // seconds)
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    name = f"audit-window:{group}:{slot}:{digest}"
    try:
        cache.add(name, 0, timeout=seconds + 60)
        return int(cache.incr(name))
    except Exception:  # the cache is down or evicted the key: record rather than lose
        logger.warning("cannot count %s in the cache; recording the row", group, exc_info=True)
        return 1


def _is_milestone(count: int) -> bool:
    return count >= 10 and str(count).rstrip("0") == "1"


def login_failure_record(*, request: HttpRequest, username: str, otp: bool = False) -> None:
    address = client_address(request)
    pair = _window_count("login-failure", f"{username[:150]}\0{address}")
    from_address = _window_count("login-failure.address", address)
    in_tenant = _window_count("login-failure.tenant", "")
    details: dict[str, object] = {"otp": True} if otp else {}
    if pair == 1 and from_address <= ADDRESS_ROWS and in_tenant <= TENANT_ROWS:
        pass
    elif _is_milestone(from_address) and in_tenant <= TENANT_ROWS:
        details["failures_from_address"] = from_address
    elif _is_milestone(in_tenant):
        details["failures_in_tenant"] = in_tenant
    else:
        return
    details["window"] = f"{FAILURE_WINDOW}m"
    audit_record(
        action="login.failure",
        request=request,
        outcome=Outcome.FAILURE,
        actor_name=username[:150],
        object_type="user",
        details=details,
    )


def lockout_record(*, request: HttpRequest, username: str, cooloff_minutes: int) -> None:
    """One row per lockout, however many attempts the lockout then refuses."""
    key = f"{username[:150]}\0{client_address(request)}"
    if _window_count("lockout", key, max(1, cooloff_minutes) * 60) > 1:
        return
    audit_record(
        action="login.lockout",
        request=request,
        outcome=Outcome.DENIED,
        actor_name=username[:150],
        object_type="user",
        details={"cooloff_minutes": cooloff_minutes, "failures": settings.AXES_FAILURE_LIMIT},
    )


def password_change_record(*, request: HttpRequest, user: User, via: str) -> None:
    """A password changed: by its owner ("account"), or through a one-time link ("link")."""
    audit_record(
        action="password.change", request=request, actor=user, target=user, details={"via": via}
    )


def login_pending_start(*, request: HttpRequest, user: User, redirect_to: str) -> None:
    """The password was right and a code is due: remember who, not logged in yet."""
    request.session.cycle_key()
    request.session[PENDING_LOGIN_KEY] = {
        "user": user.pk,
        "backend": getattr(user, "backend", None),
        "next": redirect_to,
        "until": time.time() + PENDING_LOGIN_SECONDS,
    }


def login_pending_clear(*, request: HttpRequest) -> None:
    request.session.pop(PENDING_LOGIN_KEY, None)


def login_second_factor(
    *, request: HttpRequest, user: User, code: str, backend: str | None
) -> bool:
    """Finish a two-step login with a code. A wrong code is audited and counted by the login
    throttle like a wrong password, so codes cannot be guessed past the lockout."""
    device = _verify_code(TOTPDevice.objects.filter(user=user, confirmed=True), code)
    if device is None:
        login_failure_record(request=request, username=user.get_username(), otp=True)
        user_login_failed.send(
            sender=__name__, credentials={"username": user.get_username()}, request=request
        )
        return False
    login_pending_clear(request=request)
    login_complete(request=request, user=user, device=device, backend=backend)
    return True
