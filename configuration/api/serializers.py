"""Input and output shapes of the configuration API."""

from rest_framework import serializers

from configuration.models import (
    MAX_RETENTION_DAYS,
    DuplicatePolicy,
    PatientMismatchPolicy,
    RemoteNode,
    RetentionRule,
)
from configuration.validators import validate_modality


class SettingsOutput(serializers.Serializer):
    display_name = serializers.CharField()
    ae_title = serializers.CharField(allow_null=True)
    accent_colour = serializers.CharField()
    timezone = serializers.CharField()
    duplicate_policy = serializers.ChoiceField(choices=DuplicatePolicy.choices)
    patient_mismatch_policy = serializers.ChoiceField(choices=PatientMismatchPolicy.choices)
    cors_origins = serializers.ListField(child=serializers.CharField())
    viewer_url_template = serializers.CharField()
    require_known_nodes = serializers.BooleanField()
    query_retrieve_from_any_node = serializers.BooleanField()
    require_admin_2fa = serializers.BooleanField()
    job_storage_usage = serializers.BooleanField()
    job_watermark_migration = serializers.BooleanField()
    job_retention = serializers.BooleanField()
    job_verification = serializers.BooleanField()
    job_quarantine_purge = serializers.BooleanField()
    job_node_echo = serializers.BooleanField()
    updated_at = serializers.DateTimeField()


class SettingsUpdateInput(serializers.Serializer):
    """Every field optional; values are validated by the service, exactly as the page does."""

    display_name = serializers.CharField(max_length=200, required=False)
    ae_title = serializers.CharField(max_length=16, required=False, trim_whitespace=False)
    accent_colour = serializers.CharField(max_length=7, required=False)
    timezone = serializers.CharField(max_length=64, required=False)
    duplicate_policy = serializers.ChoiceField(choices=DuplicatePolicy.choices, required=False)
    patient_mismatch_policy = serializers.ChoiceField(
        choices=PatientMismatchPolicy.choices, required=False
    )
    cors_origins = serializers.ListField(
        child=serializers.CharField(trim_whitespace=False), required=False, allow_empty=True
    )
    viewer_url_template = serializers.CharField(
        max_length=500,
        required=False,
        allow_blank=True,
        help_text="Where “Open in viewer” goes, with {study_uid} (and optionally {series_uid}); "
        "empty for the built-in viewer.",
    )
    require_known_nodes = serializers.BooleanField(required=False)
    query_retrieve_from_any_node = serializers.BooleanField(required=False)
    require_admin_2fa = serializers.BooleanField(required=False)
    job_storage_usage = serializers.BooleanField(required=False)
    job_watermark_migration = serializers.BooleanField(required=False)
    job_retention = serializers.BooleanField(required=False)
    job_verification = serializers.BooleanField(required=False)
    job_quarantine_purge = serializers.BooleanField(required=False)
    job_node_echo = serializers.BooleanField(required=False)


class NodeInput(serializers.Serializer):
    ae_title = serializers.CharField(max_length=16, trim_whitespace=False)
    host = serializers.CharField(max_length=253)
    port = serializers.IntegerField(min_value=1, max_value=65535)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    tls_certificate_sha256 = serializers.CharField(
        max_length=95,
        required=False,
        allow_blank=True,
        help_text="SHA-256 fingerprint of the node's TLS client certificate (64 hex digits, "
        "colons allowed); when set, the node is recognised only over DICOM TLS with it.",
    )


class NodeOutput(serializers.ModelSerializer):
    class Meta:
        model = RemoteNode
        fields = [
            "id",
            "ae_title",
            "host",
            "port",
            "description",
            "tls_certificate_sha256",
            "created_at",
            "updated_at",
            "last_echo_at",
            "last_echo_ok",
            "last_echo_message",
            "last_association_at",
        ]


class EchoOutput(serializers.Serializer):
    ok = serializers.BooleanField()
    message = serializers.CharField()
    rtt_ms = serializers.FloatField(allow_null=True)
    node = NodeOutput()


class RuleInput(serializers.Serializer):
    modality = serializers.CharField(max_length=16)
    days = serializers.IntegerField(min_value=1, max_value=MAX_RETENTION_DAYS)
    enabled = serializers.BooleanField(default=True)
    confirm_short = serializers.BooleanField(
        default=False, help_text="Required (true) to save a rule of less than 30 days."
    )


class RuleOutput(serializers.ModelSerializer):
    class Meta:
        model = RetentionRule
        fields = ["id", "modality", "days", "enabled", "created_at", "updated_at"]


class DryRunInput(serializers.Serializer):
    modality = serializers.CharField(max_length=16, validators=[validate_modality])
    days = serializers.IntegerField(min_value=1, max_value=MAX_RETENTION_DAYS)


class DryRunOutput(serializers.Serializer):
    studies = serializers.IntegerField(help_text="Studies the rule would delete tonight.")
    bytes = serializers.IntegerField(help_text="Their size in bytes.")
    cutoff = serializers.DateTimeField(help_text="Studies received before this are deleted.")
    available = serializers.BooleanField(help_text="False while no study index exists.")
    summary = serializers.CharField()
