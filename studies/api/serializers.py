"""Input and output shapes of the storage media API; the rules themselves live in services."""

from typing import Any

from rest_framework import serializers

from accounts.permissions import Capability, request_allows
from studies.models import AddressingStyle, MediumKind, MediumStatus, StorageMedium

# Wide bounds only keep values inside the database columns; the services give the real
# messages (watermarks 0 < low < high <= 100, capacity within the quota...).
BIG = 2**63 - 1
SMALL = 32767


class MediumCreateInput(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    kind = serializers.ChoiceField(choices=MediumKind.choices, default=MediumKind.FILESYSTEM)
    # The metaclass pops declared fields, so `root` does not shadow Field.root at runtime.
    root = serializers.CharField(  # type: ignore[assignment]
        max_length=1024,
        required=False,
        default="",
        help_text="Filesystem media: directory inside the tenant's allowed root (absolute, or "
        "relative to it). Object storage media: leave out; the bucket and prefix say where.",
    )
    capacity_bytes = serializers.IntegerField(min_value=-BIG, max_value=BIG)
    high_watermark = serializers.IntegerField(min_value=-SMALL, max_value=SMALL, default=90)
    low_watermark = serializers.IntegerField(min_value=-SMALL, max_value=SMALL, default=80)
    priority = serializers.IntegerField(min_value=-(2**31), max_value=2**31 - 1, default=0)
    status = serializers.ChoiceField(choices=MediumStatus.choices, default=MediumStatus.ONLINE)
    endpoint_url = serializers.CharField(
        max_length=1024, required=False, default="", help_text="S3 API endpoint (https://...)."
    )
    region = serializers.CharField(max_length=64, required=False, default="")
    bucket = serializers.CharField(max_length=63, required=False, default="")
    prefix = serializers.CharField(
        max_length=512,
        required=False,
        default="",
        help_text="Optional key prefix inside the bucket; the portal adds its own segment.",
    )
    addressing_style = serializers.ChoiceField(
        choices=AddressingStyle.choices, default=AddressingStyle.PATH
    )
    access_key_id = serializers.CharField(max_length=128, required=False, default="")
    secret_key = serializers.CharField(
        max_length=1024,
        required=False,
        default="",
        write_only=True,
        style={"input_type": "password"},
        help_text="Sealed at rest and never returned.",
    )


class MediumUpdateInput(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False)
    root = serializers.CharField(max_length=1024, required=False)  # type: ignore[assignment]
    capacity_bytes = serializers.IntegerField(min_value=-BIG, max_value=BIG, required=False)
    high_watermark = serializers.IntegerField(min_value=-SMALL, max_value=SMALL, required=False)
    low_watermark = serializers.IntegerField(min_value=-SMALL, max_value=SMALL, required=False)
    priority = serializers.IntegerField(min_value=-(2**31), max_value=2**31 - 1, required=False)
    endpoint_url = serializers.CharField(max_length=1024, required=False)
    region = serializers.CharField(max_length=64, required=False, allow_blank=True)
    addressing_style = serializers.ChoiceField(choices=AddressingStyle.choices, required=False)
    access_key_id = serializers.CharField(max_length=128, required=False)
    secret_key = serializers.CharField(
        max_length=1024,
        required=False,
        write_only=True,
        style={"input_type": "password"},
        help_text="Replaces the sealed secret; leave out to keep it.",
    )


class MediumStatusInput(serializers.Serializer):
    status = serializers.ChoiceField(choices=MediumStatus.choices)


# Shown only to callers with Capability.SERVER_DETAILS (admins): where the files live on the
# server or in which bucket, and probe messages that name them. The secret is never shown.
OBJECT_STORE_FIELDS = (
    "endpoint_url",
    "region",
    "bucket",
    "key_prefix",
    "addressing_style",
    "access_key_id",
)
SERVER_DETAIL_FIELDS = ("root", "last_probe_message", *OBJECT_STORE_FIELDS)


class MediumOutput(serializers.ModelSerializer):
    used_percent = serializers.FloatField(read_only=True)
    # The metaclass pops declared fields, so `root` does not shadow Field.root at runtime.
    root = serializers.CharField(  # type: ignore[assignment]
        read_only=True, allow_null=True, help_text="Directory; null unless an admin asks."
    )
    last_probe_message = serializers.CharField(
        read_only=True, allow_null=True, help_text="Null unless an admin asks."
    )

    def to_representation(self, instance: Any) -> dict[str, Any]:
        data = super().to_representation(instance)
        request = self.context.get("request")
        if request is None or not request_allows(request, Capability.SERVER_DETAILS):
            data.update(dict.fromkeys(SERVER_DETAIL_FIELDS))
        return data

    class Meta:
        model = StorageMedium
        fields = [
            "id",
            "name",
            "kind",
            "root",
            *OBJECT_STORE_FIELDS,
            "capacity_bytes",
            "high_watermark",
            "low_watermark",
            "status",
            "priority",
            "used_bytes",
            "used_percent",
            "file_count",
            "usage_measured_at",
            "last_probe_at",
            "last_probe_ok",
            "last_probe_message",
            "created_at",
        ]


class ProbeOutput(serializers.Serializer):
    ok = serializers.BooleanField()
    message = serializers.CharField()
    free_bytes = serializers.IntegerField(allow_null=True)
    total_bytes = serializers.IntegerField(allow_null=True)
    write_mb_per_s = serializers.FloatField(allow_null=True)
    read_mb_per_s = serializers.FloatField(allow_null=True)
    mount_point = serializers.CharField(allow_blank=True)
    latency_ms = serializers.FloatField(
        allow_null=True, help_text="Object storage: one bucket round trip (HEAD), in milliseconds."
    )


class UsageOutput(serializers.Serializer):
    media = serializers.IntegerField()
    files = serializers.IntegerField()
    bytes = serializers.IntegerField()
