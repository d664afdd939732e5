"""Reads on users, tokens, second factors and half-finished logins of the active schema."""

import math
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import ApiToken, Role, TokenScope, User
from accounts.permissions import READ_CAPABILITIES, ROLE_CAPABILITIES, Capability
from portal.schemas import current_schema

# The session key that holds a login whose password was right but whose code is still due.
PENDING_LOGIN_KEY = "_portal_pending_login"
PENDING_LOGIN_SECONDS = 300


@dataclass(frozen=True)
class PendingLogin:
    user: User
    backend: str | None
    redirect_to: str


@dataclass(frozen=True)
class UserFilter:
    query: str = ""
    role: str = ""
    is_active: bool | None = None


def user_search(criteria: UserFilter) -> QuerySet[User]:
    """Users matching the criteria, by username, each marked with whether 2FA is on."""
    users = User.objects.annotate(
        has_second_factor=Exists(TOTPDevice.objects.filter(user=OuterRef("pk"), confirmed=True))
    )
    if criteria.query:
        q = criteria.query.strip()
        users = users.filter(
            Q(username__icontains=q)
            | Q(email__icontains=q)
            | Q(first_name__icontains=q)
            | Q(last_name__icontains=q)
        )
    if criteria.role:
        users = users.filter(role=criteria.role)
    if criteria.is_active is not None:
        users = users.filter(is_active=criteria.is_active)
    return users.order_by("username")


def active_user_count() -> int:
    """What the tenant's user quota counts: accounts that can log in."""
    return User.objects.filter(is_active=True).count()


def active_admin_count() -> int:
    return User.objects.filter(is_active=True, role=Role.ADMIN).count()


def token_list(*, user: User | None = None) -> QuerySet[ApiToken]:
    """Tokens of one user, or of everyone, newest first, with their owner loaded."""
    tokens = ApiToken.objects.select_related("user").order_by("-created_at", "-id")
    return tokens if user is None else tokens.filter(user=user)


def token_scopes_for(user: User, *, by_someone_else: bool = False) -> list[TokenScope]:
    """The scopes that give this user's role something to do. Platform tokens are all `full`:
    the super-admin API has nothing narrower to offer. A token an admin creates for someone
    else only reads or stores: a `full` one would let its creator act as that user (another
    admin, say) with none of their second factor and under their name in the audit log."""
    if current_schema() == "public":
        return [] if by_someone_else else [TokenScope.FULL]
    capabilities = ROLE_CAPABILITIES.get(user.role, frozenset())
    scopes = [] if by_someone_else else [TokenScope.FULL]
    if capabilities & READ_CAPABILITIES:
        scopes.append(TokenScope.READ)
    if Capability.INGEST_STORE in capabilities:
        scopes.append(TokenScope.STORE)
    return scopes


def second_factor_device(user: User) -> TOTPDevice | None:
    """The user's confirmed authenticator, if they set one up."""
    return TOTPDevice.objects.filter(user=user, confirmed=True).order_by("id").first()


def second_factor_wait_seconds(user: User) -> int:
    """How long django-otp's throttle still refuses codes after wrong ones (0: not now)."""
    device = second_factor_device(user)
    if device is None or device.verify_is_allowed()[0]:
        return 0
    delay = device.get_throttle_factor() * 2 ** (device.throttling_failure_count - 1)
    remaining = device.throttling_failure_timestamp + timedelta(seconds=delay) - timezone.now()
    return max(1, math.ceil(remaining.total_seconds()))


def has_second_factor(user: User) -> bool:
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


def admin_second_factor_required() -> bool:
    """The tenant's "second factor mandatory for admins" setting; on the platform site,
    PORTAL_SUPERADMIN_2FA for super-admins.

    The configuration app owns the tenant setting; it is read lazily so that accounts works
    before and without it.
    """
    if current_schema() == "public":
        return bool(settings.PORTAL_SUPERADMIN_2FA)
    try:
        from configuration.selectors import tenant_settings

        return bool(tenant_settings().require_admin_2fa)
    except (ImportError, AttributeError):
        return False


def is_site_admin(user: User) -> bool:
    """An admin of the site being served: a tenant admin, or on the platform a super-admin."""
    if current_schema() == "public":
        return bool(user.is_superuser)
    return user.role == Role.ADMIN


def second_factor_missing(user: User) -> bool:
    """Whether this user must set up a second factor before using the site."""
    return (
        user.is_active
        and is_site_admin(user)
        and admin_second_factor_required()
        and not has_second_factor(user)
    )


def pending_login(request: HttpRequest) -> PendingLogin | None:
    """The login waiting for its second factor in this session, unless it has expired or its
    user was deactivated (or lost the device) since."""
    state = request.session.get(PENDING_LOGIN_KEY)
    if not isinstance(state, dict) or state.get("until", 0) < time.time():
        return None
    user = User.objects.filter(pk=int(state.get("user") or 0), is_active=True).first()
    if user is None or not has_second_factor(user):
        return None
    return PendingLogin(user=user, backend=state.get("backend"), redirect_to=state.get("next", "/"))
