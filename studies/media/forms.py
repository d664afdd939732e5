"""Storage media forms; they only collect input, the rules live in studies/media/services.py."""

from decimal import Decimal
from typing import Any

from django import forms

from studies.models import AddressingStyle, MediumKind, MediumStatus, StorageMedium

GIB = 1 << 30
# Service error keys that a form shows under a differently named field.
FORM_FIELD_FOR = {"capacity_bytes": "capacity_gib", "prefix": "key_prefix"}


class MediumForm(forms.Form):
    """Add a medium (kind and status included); the edit form drops those two."""

    name = forms.CharField(
        max_length=100,
        widget=forms.TextInput(attrs={"autofocus": True, "autocomplete": "off"}),
    )
    kind = forms.ChoiceField(choices=MediumKind.choices, initial=MediumKind.FILESYSTEM)
    root = forms.CharField(max_length=1024, label="Directory", required=False)
    capacity_gib = forms.DecimalField(
        label="Capacity (GiB)",
        max_digits=16,
        decimal_places=3,
        help_text="How much of the tenant's quota this medium may fill; 1 GiB = 1024³ bytes.",
    )
    high_watermark = forms.IntegerField(
        label="High watermark (%)",
        initial=90,
        help_text="Above this, new images go elsewhere and the oldest studies move off.",
    )
    low_watermark = forms.IntegerField(
        label="Low watermark (%)",
        initial=80,
        help_text="Moving stops once usage is below this.",
    )
    priority = forms.IntegerField(
        initial=0, help_text="New images go to the online medium with the highest priority."
    )
    status = forms.ChoiceField(choices=MediumStatus.choices, initial=MediumStatus.ONLINE)
    # Object storage (kind s3); the service checks them (and probes the bucket) on save.
    endpoint_url = forms.CharField(
        max_length=255,
        required=False,
        label="Endpoint",
        help_text="Empty for AWS S3; otherwise the S3 API's URL, e.g. https://s3.example.org "
        "(plain http only for endpoints the platform lists).",
        widget=forms.URLInput(attrs={"placeholder": "https://s3.example.org"}),
    )
    region = forms.CharField(max_length=64, required=False, initial="us-east-1")
    bucket = forms.CharField(max_length=63, required=False)
    # Not `prefix`: that is the form's own attribute (the prefix of its field names).
    key_prefix = forms.CharField(
        max_length=200,
        required=False,
        label="Key prefix",
        help_text="Optional folder in the bucket; the archive adds a folder of its own below.",
    )
    addressing_style = forms.ChoiceField(
        choices=AddressingStyle.choices,
        initial=AddressingStyle.PATH,
        required=False,
        label="Addressing",
        help_text="Path style suits MinIO and most on-premises stores; virtual host suits AWS.",
    )
    access_key_id = forms.CharField(
        max_length=128,
        required=False,
        label="Access key ID",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    secret_key = forms.CharField(
        max_length=1024,
        required=False,
        label="Secret access key",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}, render_value=False),
        help_text="Stored sealed; it is never shown again.",
    )

    GENERAL = (
        "name",
        "kind",
        "capacity_gib",
        "high_watermark",
        "low_watermark",
        "priority",
        "status",
    )
    DIRECTORY = ("root",)
    OBJECT_STORAGE = (
        "endpoint_url",
        "region",
        "bucket",
        "key_prefix",
        "addressing_style",
        "access_key_id",
        "secret_key",
    )

    def groups(self) -> dict[str, list[forms.BoundField]]:
        """The form's fields by fieldset: general, directory (filesystem), object storage."""
        pick = lambda names: [self[n] for n in names if n in self.fields]  # noqa: E731
        return {
            "general": pick(self.GENERAL),
            "directory": pick(self.DIRECTORY),
            "object_storage": pick(self.OBJECT_STORAGE),
        }

    def __init__(self, *args: Any, allowed_root: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["root"].help_text = (
            f"A directory inside {allowed_root}: absolute, or relative to it (e.g. disk2). "
            "It is created if needed and must be writable."
        )
        self.fields["root"].widget.attrs["placeholder"] = f"{allowed_root}/disk2"

    def service_arguments(self) -> dict[str, Any]:
        """The cleaned data in the services' terms (bytes instead of GiB)."""
        data = dict(self.cleaned_data)
        if "capacity_gib" in data:
            data["capacity_bytes"] = int(data.pop("capacity_gib") * GIB)
        if data.get("kind") != MediumKind.S3:
            for name in self.OBJECT_STORAGE:
                data.pop(name, None)
        elif "key_prefix" in data:
            data["prefix"] = data.pop("key_prefix")
        return data

    def add_service_errors(self, errors: dict[str, list[str]]) -> None:
        for field, messages in errors.items():
            name = FORM_FIELD_FOR.get(field, field)
            self.add_error(name if name in self.fields else None, messages)


class MediumEditForm(MediumForm):
    """Edit a medium: only the fields that changed go to the service."""

    def __init__(self, *args: Any, medium: StorageMedium, **kwargs: Any) -> None:
        kwargs["initial"] = {
            "name": medium.name,
            "root": medium.root,
            "capacity_gib": (Decimal(medium.capacity_bytes) / GIB).quantize(Decimal("0.001")),
            "high_watermark": medium.high_watermark,
            "low_watermark": medium.low_watermark,
            "priority": medium.priority,
            "endpoint_url": medium.endpoint_url,
            "region": medium.region,
            "addressing_style": medium.addressing_style,
            "access_key_id": medium.access_key_id,
            **(kwargs.get("initial") or {}),
        }
        super().__init__(*args, **kwargs)
        del self.fields["kind"], self.fields["status"]
        if medium.kind == MediumKind.S3:
            del self.fields["root"], self.fields["bucket"], self.fields["key_prefix"]
            self.fields["secret_key"].help_text = "Leave empty to keep the stored one."
        else:
            for name in self.OBJECT_STORAGE:
                del self.fields[name]
            self.fields["root"].required = True

    def service_arguments(self) -> dict[str, Any]:
        # An untouched, rounded GiB figure must not nudge the exact capacity in bytes.
        changed = set(self.changed_data)
        data = {k: v for k, v in self.cleaned_data.items() if k in changed}
        if not data.get("secret_key"):
            data.pop("secret_key", None)
        if "capacity_gib" in data:
            data["capacity_bytes"] = int(data.pop("capacity_gib") * GIB)
        return data


class MediumStatusForm(forms.Form):
    status = forms.ChoiceField(choices=MediumStatus.choices)


class MediumFilterForm(forms.Form):
    status = forms.ChoiceField(choices=[("", "Any status"), *MediumStatus.choices], required=False)
    kind = forms.ChoiceField(choices=[("", "Any kind"), *MediumKind.choices], required=False)

    def criteria(self) -> dict[str, str]:
        if not self.is_valid():
            return {}
        return {k: v for k, v in self.cleaned_data.items() if v}
