"""Tenants, their domains and the audited history of their lifecycle (public schema)."""

from django.conf import settings
from django.db import models
from django.db.models.functions import Upper
from django_tenants.models import DomainMixin, TenantMixin

from tenants.validators import validate_ae_title, validate_slug


class TenantStatus(models.TextChoices):
    PROVISIONING = "provisioning", "Provisioning"
    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"
    DELETED = "deleted", "Deleted (grace period)"
    PURGED = "purged", "Purged"


class LiveTenantManager(models.Manager["Tenant"]):
    """Tenants that still have a schema. django-tenants iterates `Tenant.objects` in
    `migrate_schemas` and friends; a purged tenant's row stays as a record but has no schema."""

    def get_queryset(self) -> models.QuerySet["Tenant"]:
        return super().get_queryset().exclude(status=TenantStatus.PURGED)


class Tenant(TenantMixin):
    """A hospital, clinic or research group: one PostgreSQL schema and one storage root."""

    slug = models.CharField(max_length=32, unique=True, validators=[validate_slug])
    name = models.CharField("display name", max_length=200)
    status = models.CharField(
        max_length=16, choices=TenantStatus.choices, default=TenantStatus.PROVISIONING
    )
    ae_title = models.CharField(
        "AE title",
        max_length=16,
        unique=True,
        null=True,
        blank=True,
        validators=[validate_ae_title],
        help_text="Called AE title that routes DICOM associations to this tenant.",
    )
    quota_bytes = models.BigIntegerField(
        "storage quota (bytes)", default=settings.PORTAL_DEFAULT_QUOTA_BYTES
    )
    quota_users = models.PositiveIntegerField(
        "user quota", default=settings.PORTAL_DEFAULT_QUOTA_USERS
    )
    storage_root = models.CharField(
        "allowed storage root",
        max_length=1024,
        help_text="Every storage medium of the tenant must lie inside this directory.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    purge_after = models.DateTimeField(null=True, blank=True)

    objects = LiveTenantManager()
    all_objects = models.Manager()

    # Provisioning is explicit (tenants/provisioning.py), never a side effect of save().
    auto_create_schema = False
    auto_drop_schema = False

    class Meta:
        ordering = ["slug"]
        # Uniqueness checks and admin tools see purged rows too: slugs are never reused.
        default_manager_name = "all_objects"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(quota_bytes__gt=0), name="tenant_quota_bytes_positive"
            ),
            # AE titles compare without case here: ACME and acme would be a trap for whoever
            # configures a modality.
            models.UniqueConstraint(Upper("ae_title"), name="tenant_ae_title_unique_any_case"),
            models.CheckConstraint(
                condition=models.Q(status="deleted", purge_after__isnull=False)
                | ~models.Q(status="deleted"),
                name="tenant_deleted_has_purge_date",
            ),
        ]

    def __str__(self) -> str:
        return self.slug

    @property
    def is_public(self) -> bool:
        return self.schema_name == "public"

    @property
    def is_usable(self) -> bool:
        """Whether the tenant's site, API and DICOM services accept requests."""
        return self.status == TenantStatus.ACTIVE


class Domain(DomainMixin):
    """A host name that routes to a tenant in `subdomain` mode."""

    class Meta:
        ordering = ["-is_primary", "domain"]


class TenantEvent(models.Model):
    """One audited change of a tenant: who did what, when, from which state to which."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="events")
    action = models.CharField(max_length=32)
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16, blank=True)
    actor = models.CharField(max_length=150, help_text="Super-admin username or 'system'.")
    at = models.DateTimeField(auto_now_add=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["tenant", "-at"])]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.action} by {self.actor}"


class UsageRecord(models.Model):
    """What one tenant used on one UTC day, for billing; only aggregates, never PHI.

    Written by `tenants.usage.usage_record_compute` (see its module for how each figure is
    counted); recomputing a day replaces its row.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="usage_records")
    day = models.DateField()
    bytes_by_medium = models.JSONField(
        default=dict, blank=True, help_text="Medium name to measured bytes."
    )
    bytes_total = models.BigIntegerField(default=0)
    studies_added = models.PositiveIntegerField(default=0)
    studies_deleted = models.PositiveIntegerField(default=0)
    instances_added = models.PositiveIntegerField(default=0)
    instances_deleted = models.PositiveIntegerField(default=0)
    dicomweb_requests = models.PositiveIntegerField(default=0)
    dicomweb_bytes_served = models.BigIntegerField(default=0)
    job_seconds = models.PositiveIntegerField(
        default=0, help_text="Run time of the periodic job runs that finished that day."
    )
    computed_at = models.DateTimeField()

    class Meta:
        ordering = ["-day", "tenant_id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "day"], name="usagerecord_once_per_day"),
            models.CheckConstraint(
                condition=models.Q(bytes_total__gte=0, dicomweb_bytes_served__gte=0),
                name="usagerecord_bytes_not_negative",
            ),
        ]
        indexes = [models.Index(fields=["day"])]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.day:%Y-%m-%d}"

    @property
    def job_minutes(self) -> float:
        return self.job_seconds / 60


class SelftestStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    PASSED = "passed", "No leak"
    LEAKED = "leaked", "Leaks found"
    ERROR = "error", "Could not run"


class SelftestRun(models.Model):
    """A run of the tenant-boundary self-test (tenants.selftest), started from the super-admin
    site or kept for the record; the CLI prints its report instead."""

    requested_by = models.CharField(max_length=150)
    requested_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(
        max_length=8, choices=SelftestStatus.choices, default=SelftestStatus.QUEUED
    )
    routes = models.PositiveIntegerField(default=0)
    probes = models.PositiveIntegerField(default=0)
    seconds = models.FloatField(null=True, blank=True)
    leaks = models.JSONField(default=list, blank=True)
    errors = models.JSONField(default=list, blank=True)
    message = models.TextField(blank=True)

    class Meta:
        ordering = ["-requested_at", "-id"]

    def __str__(self) -> str:
        return f"self-test #{self.pk}: {self.status}"

    @property
    def in_progress(self) -> bool:
        return self.status in {SelftestStatus.QUEUED, SelftestStatus.RUNNING}


class FleetFigures(models.Model):
    """A tenant's figures as the fleet pass last measured them (tenants/figures.py): what the
    fleet page filters and sorts by, what /health/ready and /metrics read, from one query
    however many tenants there are. Never counted per request."""

    tenant = models.OneToOneField(
        Tenant, on_delete=models.CASCADE, primary_key=True, related_name="fleet_figures"
    )
    users = models.PositiveIntegerField(default=0)
    media = models.PositiveIntegerField(default=0)
    used_bytes = models.BigIntegerField(default=0)
    capacity_bytes = models.BigIntegerField(default=0)
    media_above_watermark = models.PositiveIntegerField(default=0)
    failed_jobs = models.PositiveIntegerField(default=0)
    # Each medium as read: name, kind, status, root, used and capacity bytes, and what its
    # write probe found ("probe": None when it was writable).
    media_detail = models.JSONField(default=list, blank=True)
    missing_migrations = models.PositiveIntegerField(default=0)
    migrations_note = models.CharField(max_length=300, blank=True)
    # Which migrations on disk the count was made against; another value means "not known".
    migrations_digest = models.CharField(max_length=64, blank=True)
    error = models.CharField(max_length=200, blank=True)  # the schema could not be read
    measured_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["measured_at"])]

    def __str__(self) -> str:
        return f"figures of {self.tenant_id} at {self.measured_at:%Y-%m-%d %H:%M}"

    @property
    def over_quota(self) -> bool:
        return self.used_bytes > self.tenant.quota_bytes
