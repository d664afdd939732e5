"""Input and output shapes of the tenant API."""

from rest_framework import serializers

from tenants.models import Domain, Tenant, UsageRecord
from tenants.validators import validate_ae_title, validate_slug


class TenantCreateInput(serializers.Serializer):
    slug = serializers.CharField(max_length=32, validators=[validate_slug])
    name = serializers.CharField(max_length=200)
    admin_email = serializers.EmailField()
    ae_title = serializers.CharField(
        max_length=16, required=False, allow_blank=True, validators=[validate_ae_title]
    )
    quota_bytes = serializers.IntegerField(min_value=1, required=False)
    quota_users = serializers.IntegerField(min_value=1, required=False)
    storage_root = serializers.CharField(max_length=1024, required=False)


class TenantUpdateInput(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    ae_title = serializers.CharField(max_length=16, required=False, validators=[validate_ae_title])
    quota_bytes = serializers.IntegerField(min_value=1, required=False)
    quota_users = serializers.IntegerField(min_value=1, required=False)
    storage_root = serializers.CharField(max_length=1024, required=False)


class TenantDeleteInput(serializers.Serializer):
    confirm_slug = serializers.CharField(help_text="The tenant's slug, typed again.")


class TenantSuspendInput(serializers.Serializer):
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True)


class DomainInput(serializers.Serializer):
    domain = serializers.CharField(max_length=253)


class DomainOutput(serializers.ModelSerializer):
    class Meta:
        model = Domain
        fields = ["id", "domain", "is_primary"]


class TenantOutput(serializers.ModelSerializer):
    domains = DomainOutput(many=True, read_only=True)

    class Meta:
        model = Tenant
        fields = [
            "slug",
            "name",
            "status",
            "schema_name",
            "ae_title",
            "quota_bytes",
            "quota_users",
            "storage_root",
            "created_at",
            "deleted_at",
            "purge_after",
            "domains",
        ]


class TenantCreatedOutput(TenantOutput):
    set_password_url = serializers.CharField(
        help_text="One-time link for the tenant admin; returned only in this response."
    )

    class Meta(TenantOutput.Meta):
        fields = [*TenantOutput.Meta.fields, "set_password_url"]


class UsageRecordOutput(serializers.ModelSerializer):
    tenant = serializers.CharField(source="tenant.slug", read_only=True)
    bytes_by_medium = serializers.DictField(
        child=serializers.IntegerField(), help_text="Medium name to measured bytes."
    )
    job_minutes = serializers.FloatField(read_only=True)

    class Meta:
        model = UsageRecord
        fields = [
            "tenant",
            "day",
            "bytes_by_medium",
            "bytes_total",
            "studies_added",
            "studies_deleted",
            "instances_added",
            "instances_deleted",
            "dicomweb_requests",
            "dicomweb_bytes_served",
            "job_seconds",
            "job_minutes",
            "computed_at",
        ]


class AdminLinkInput(serializers.Serializer):
    username = serializers.CharField(required=False, max_length=150)


class AdminLinkOutput(serializers.Serializer):
    username = serializers.CharField()
    email = serializers.EmailField()
    url = serializers.CharField(help_text="The one-time set-password link; shown only now.")
    expires_at = serializers.DateTimeField()
