"""The tenant's configuration: one settings row, remote DICOM nodes, retention rules, history."""

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from configuration.validators import (
    validate_accent_colour,
    validate_certificate_fingerprint,
    validate_cors_origins,
    validate_modality,
    validate_node_host,
    validate_timezone,
    validate_viewer_url_template,
)
from tenants.validators import validate_ae_title

DEFAULT_ACCENT = "#1f6feb"
SINGLETON_ID = 1


class PatientMismatchPolicy(models.TextChoices):
    ACCEPT_AND_FLAG = "accept-flag", "Accept the instance and flag the study"
    REFUSE = "refuse", "Refuse the instance (quarantined with the reason)"


class DuplicatePolicy(models.TextChoices):
    KEEP_FIRST = "keep-first", "Keep the first copy (ignore later ones)"
    REPLACE = "replace", "Replace with the newest copy"


class TenantSettings(models.Model):
    """The tenant's settings, one row (id 1) per schema, read through `tenant_settings()`."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON_ID, editable=False)
    accent_colour = models.CharField(
        max_length=7,
        default=DEFAULT_ACCENT,
        validators=[validate_accent_colour],
        help_text="Shown in the header of every page of this tenant.",
    )
    timezone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[validate_timezone],
        help_text="IANA name, e.g. Europe/Berlin; times of scheduled jobs follow it.",
    )
    duplicate_policy = models.CharField(
        max_length=16,
        choices=DuplicatePolicy.choices,
        default=DuplicatePolicy.KEEP_FIRST,
        help_text="What happens when an instance arrives whose SOP Instance UID is stored.",
    )
    patient_mismatch_policy = models.CharField(
        max_length=16,
        choices=PatientMismatchPolicy.choices,
        default=PatientMismatchPolicy.ACCEPT_AND_FLAG,
        help_text="What happens when an instance joins a stored study with the same Patient "
        "ID but another patient name or birth date.",
    )
    cors_origins = models.JSONField(
        "CORS origins",
        default=list,
        blank=True,
        validators=[validate_cors_origins],
        help_text="Web viewers allowed to read DICOMweb from a browser.",
    )
    viewer_url_template = models.CharField(
        "viewer URL",
        max_length=500,
        blank=True,
        validators=[validate_viewer_url_template],
        help_text="Where “Open in viewer” goes, with {study_uid} (and optionally {series_uid}) "
        "in it; empty: the viewer built into this portal.",
    )
    require_known_nodes = models.BooleanField(
        "accept DICOM only from listed nodes",
        default=False,
        help_text="Refuse associations from AE titles and hosts that are not listed below.",
    )
    query_retrieve_from_any_node = models.BooleanField(
        "answer queries and retrievals from any node",
        default=False,
        help_text="Off: C-FIND, C-MOVE and C-GET are answered only for the remote nodes "
        "listed below (AE title and address); others may still send and echo.",
    )
    require_admin_2fa = models.BooleanField(
        "admins must use two-factor authentication", default=False
    )
    job_storage_usage = models.BooleanField("measure storage usage", default=True)
    job_watermark_migration = models.BooleanField("migrate above high watermark", default=True)
    # Off until someone writes a rule: the job has nothing to do without one.
    job_retention = models.BooleanField("apply retention rules", default=False)
    job_verification = models.BooleanField("verify stored files", default=True)
    job_quarantine_purge = models.BooleanField("purge old quarantined files", default=True)
    job_node_echo = models.BooleanField("test remote nodes (C-ECHO)", default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "tenant settings"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(id=SINGLETON_ID), name="tenantsettings_singleton"
            )
        ]

    def __str__(self) -> str:
        return "tenant settings"


class RemoteNode(models.Model):
    """A DICOM peer (modality, workstation, other PACS) this tenant talks to."""

    ae_title = models.CharField("AE title", max_length=16, validators=[validate_ae_title])
    host = models.CharField(max_length=253, validators=[validate_node_host])
    port = models.PositiveIntegerField(validators=[MinValueValidator(1), MaxValueValidator(65535)])
    description = models.CharField(max_length=200, blank=True)
    tls_certificate_sha256 = models.CharField(
        "TLS client certificate (SHA-256)",
        max_length=64,
        blank=True,
        validators=[validate_certificate_fingerprint],
        help_text="Pins the node to its client certificate: an association from it is "
        "recognised only over DICOM TLS with exactly this certificate. Empty: recognised "
        "by AE title and address alone.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_echo_at = models.DateTimeField("last C-ECHO", null=True, blank=True)
    last_echo_ok = models.BooleanField(null=True, blank=True)
    last_echo_message = models.CharField(max_length=500, blank=True)
    # When the gateway last admitted an association from this node (kept to the minute).
    last_association_at = models.DateTimeField("last association", null=True, blank=True)

    class Meta:
        ordering = ["ae_title", "host", "port"]
        constraints = [
            models.UniqueConstraint(
                fields=["ae_title", "host", "port"],
                name="remotenode_unique_address",
                violation_error_message="This AE title, host and port are already listed.",
            ),
            models.CheckConstraint(
                condition=models.Q(port__gte=1, port__lte=65535), name="remotenode_port_range"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


# A century: beyond any legal retention period, and far inside what date arithmetic can reach.
MAX_RETENTION_DAYS = 36_525


class RetentionRule(models.Model):
    """Studies of `modality` (or of any, `*`) received more than `days` ago are deleted."""

    modality = models.CharField(
        max_length=16,
        unique=True,
        validators=[validate_modality],
        error_messages={"unique": "A rule for this modality exists already; edit it instead."},
        help_text="DICOM modality code such as CT or MR, or * for every modality.",
    )
    days = models.PositiveIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(MAX_RETENTION_DAYS)],
        help_text="Keep studies this many days after receipt.",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["modality"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(days__gte=1), name="retentionrule_days_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(days__lte=MAX_RETENTION_DAYS),
                name="retentionrule_days_at_most_a_century",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.modality}: {self.days} days"


class SettingChange(models.Model):
    """One changed value of the configuration: append-only (a trigger refuses UPDATE/DELETE)."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_name = models.CharField(max_length=150)
    subject = models.CharField(
        max_length=32, help_text="What was changed: settings, node or retention rule."
    )
    subject_id = models.BigIntegerField(null=True, blank=True)
    subject_label = models.CharField(max_length=100, blank=True)
    field = models.CharField(max_length=64)
    old_value = models.JSONField(null=True, blank=True)
    new_value = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["subject", "subject_id"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.subject}.{self.field}"
