"""Audit rows. A database trigger refuses UPDATE and DELETE: the product cannot rewrite history."""

from django.conf import settings
from django.db import models


class Outcome(models.TextChoices):
    SUCCESS = "success", "Success"
    FAILURE = "failure", "Failure"
    DENIED = "denied", "Denied"


class AuditEvent(models.Model):
    """One action on the tenant's data or configuration."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_name = models.CharField(
        max_length=150, blank=True, help_text="Username as typed or known at the time."
    )
    source_address = models.GenericIPAddressField(null=True, blank=True)
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=128, blank=True)
    outcome = models.CharField(max_length=8, choices=Outcome.choices, default=Outcome.SUCCESS)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["action", "-at"]),
            models.Index(fields=["actor", "-at"]),
            models.Index(fields=["object_type", "object_id"]),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action} {self.outcome}"


class AuditSeal(models.Model):
    """A link of the tenant's hash chain over its audit log: `digest` folds `previous` (the
    digest of the seal before, or GENESIS) with every row from `first_event_id` to
    `last_event_id`, in id order. Append-only like the rows: editing, removing or adding a
    sealed row breaks this link, and editing a seal breaks the next."""

    sealed_at = models.DateTimeField(auto_now_add=True)
    first_event_id = models.BigIntegerField()
    last_event_id = models.BigIntegerField(unique=True)
    events = models.PositiveIntegerField()
    previous = models.CharField(max_length=64)
    digest = models.CharField(max_length=64)

    class Meta:
        ordering = ["last_event_id"]

    def __str__(self) -> str:
        return f"seal of #{self.first_event_id}-#{self.last_event_id}: {self.digest[:12]}"
