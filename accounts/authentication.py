"""DRF authentication by `Authorization: Bearer pp_…` API tokens of the active schema."""

import hmac
from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions

from accounts.models import ApiToken
from accounts.selectors import second_factor_missing

LAST_USED_PRECISION = timedelta(minutes=1)


class ApiTokenAuthentication(authentication.BaseAuthentication):
    """Looks the token up in the active schema only: a token of tenant A is unknown in B."""

    keywords = ("bearer", "token")

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode(errors="replace")
        keyword, _, raw = header.partition(" ")
        if keyword.lower() not in self.keywords or not raw:
            return None
        parts = ApiToken.split(raw.strip())
        if parts is None:
            raise exceptions.AuthenticationFailed("Malformed API token.")
        key_id, secret = parts
        token = ApiToken.objects.select_related("user").filter(key_id=key_id).first()
        if token is None or not hmac.compare_digest(token.key_hash, ApiToken.hash_secret(secret)):
            raise exceptions.AuthenticationFailed("Invalid API token.")
        if not token.is_valid:
            raise exceptions.AuthenticationFailed("This API token has expired or was revoked.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("The token's user is deactivated.")
        if second_factor_missing(token.user):
            # The site requires a second factor of its admins (PORTAL_SUPERADMIN_2FA on the
            # platform): a token must not be the way around it.
            raise exceptions.PermissionDenied(
                "This site requires admins to use two-factor authentication: set it up at "
                "/account/2fa/ and your tokens work again."
            )
        now = timezone.now()
        # A viewer fetches frame after frame: record the use once a minute, not per request.
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_PRECISION:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token

    def authenticate_header(self, request):
        return 'Bearer realm="api"'
