"""Writes on users and tokens of the active schema."""

from datetime import datetime

from django.contrib.auth.tokens import PasswordResetTokenGenerator
from django.urls import get_resolver
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from accounts.models import ApiToken, Role, TokenScope, User
from portal.schemas import current_schema


class SchemaBoundTokenGenerator(PasswordResetTokenGenerator):
    """Password links that also hash the schema: a link made for tenant A is void in B."""

    key_salt = "accounts.SchemaBoundTokenGenerator"

    def _make_hash_value(self, user, timestamp):
        return f"{current_schema()}:{super()._make_hash_value(user, timestamp)}"


set_password_tokens = SchemaBoundTokenGenerator()


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


def api_token_create(
    *, user: User, name: str, scope: str = TokenScope.FULL, expires_at: datetime | None = None
) -> tuple[ApiToken, str]:
    """A new token and its raw value, which is shown once and never stored."""
    raw, key_id, key_hash = ApiToken.generate()
    token = ApiToken.objects.create(
        user=user, name=name, key_id=key_id, key_hash=key_hash, scope=scope, expires_at=expires_at
    )
    return token, raw
