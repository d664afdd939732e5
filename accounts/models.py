"""Users and API tokens. In `public` they are super-admins; in a tenant schema, its staff."""

import hashlib
import secrets

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils import timezone


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    OPERATOR = "operator", "Operator"
    VIEWER = "viewer", "Viewer"
    AUDITOR = "auditor", "Auditor"


class User(AbstractUser):
    """A person who logs in. The table of the active schema decides whose person it is."""

    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)

    class Meta:
        ordering = ["username"]

    def __str__(self) -> str:
        return self.username


class TokenScope(models.TextChoices):
    FULL = "full", "The user's full role"
    READ = "read", "Read only"
    STORE = "store", "Store only"


class ApiToken(models.Model):
    """A bearer token for scripts. Only a SHA-256 of the secret is stored; it is shown once."""

    PREFIX = "pp_"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    key_id = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    scope = models.CharField(max_length=8, choices=TokenScope.choices, default=TokenScope.FULL)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.PREFIX}{self.key_id}…)"

    @property
    def is_valid(self) -> bool:
        now = timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    @property
    def status(self) -> str:
        """`active`, `expired` or `revoked`, for lists and badges."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= timezone.now():
            return "expired"
        return "active"

    @property
    def prefix(self) -> str:
        """The public part of the token, enough to recognise it in a script's configuration."""
        return f"{self.PREFIX}{self.key_id}"

    @staticmethod
    def hash_secret(secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    @classmethod
    def split(cls, raw: str) -> tuple[str, str] | None:
        """`pp_<key_id>_<secret>` -> (key_id, secret), or None when it is not a token of ours."""
        if not raw.startswith(cls.PREFIX):
            return None
        key_id, _, secret = raw[len(cls.PREFIX) :].partition("_")
        if not key_id or not secret or len(key_id) > 16:
            return None
        return key_id, secret

    @classmethod
    def generate(cls) -> tuple[str, str, str]:
        """A new (raw token, key_id, secret hash)."""
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        return f"{cls.PREFIX}{key_id}_{secret}", key_id, cls.hash_secret(secret)
