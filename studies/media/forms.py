"""Storage media forms; they only collect input, the rules live in studies/media/services.py."""

from decimal import Decimal
from typing import Any

from django import forms

from studies.models import MediumKind, MediumStatus, StorageMedium

GIB = 1 << 30
# Service error keys that a form shows under a differently named field.
FORM_FIELD_FOR = {"capacity_bytes": "capacity_gib"}


class MediumForm(forms.Form):
    """Add a medium (kind and status included); the edit form drops those two."""

    name = forms.CharField(
        max_length=100,
        widget=forms.TextInput(attrs={"autofocus": True, "autocomplete": "off"}),
    )
    kind = forms.ChoiceField(choices=MediumKind.choices, initial=MediumKind.FILESYSTEM)
    root = forms.CharField(max_length=1024, label="Directory")
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
            **(kwargs.get("initial") or {}),
        }
        super().__init__(*args, **kwargs)
        del self.fields["kind"], self.fields["status"]
        if medium.kind != MediumKind.FILESYSTEM:
            del self.fields["root"]

    def service_arguments(self) -> dict[str, Any]:
        # An untouched, rounded GiB figure must not nudge the exact capacity in bytes.
        changed = set(self.changed_data)
        data = {k: v for k, v in self.cleaned_data.items() if k in changed}
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
