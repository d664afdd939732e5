"""Forms of /settings/: one per section, nodes and retention rules; services validate again."""

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from configuration.models import (
    MAX_RETENTION_DAYS,
    DuplicatePolicy,
    PatientMismatchPolicy,
    RetentionRule,
)
from configuration.services import SHORT_RETENTION_DAYS, SHORT_RETENTION_MESSAGE
from configuration.validators import validate_certificate_fingerprint, validate_modality
from tenants.validators import validate_ae_title


def add_service_errors(form: forms.Form, error: ValidationError) -> None:
    """Show a service's errors next to the form's fields, the rest above the form."""
    if not hasattr(error, "error_dict"):
        form.add_error(None, error)
        return
    for field, messages in error.message_dict.items():
        form.add_error(field if field in form.fields else None, messages)


class IdentityForm(forms.Form):
    display_name = forms.CharField(
        max_length=200, help_text="Shown in the header of every page and in page titles."
    )
    ae_title = forms.CharField(
        label="AE title",
        required=False,
        disabled=True,
        help_text="Called AE title modalities send to. It routes DICOM traffic to this "
        "archive, so only the platform administrator changes it.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["display_name"].widget.attrs["autofocus"] = True

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        cleaned.pop("ae_title", None)  # shown, never submitted
        return cleaned


class PoliciesForm(forms.Form):
    duplicate_policy = forms.ChoiceField(
        label="When an instance arrives twice",
        choices=DuplicatePolicy.choices,
        widget=forms.RadioSelect,
        help_text="Same SOP Instance UID as an instance already stored. A copy with other "
        "bytes than the kept one is never a plain success: it is quarantined and the sender "
        "told so.",
    )
    patient_mismatch_policy = forms.ChoiceField(
        label="When an instance names its patient differently",
        choices=PatientMismatchPolicy.choices,
        widget=forms.RadioSelect,
        help_text="Same Patient ID as the stored study, but another name or birth date. "
        "Another Patient ID is always refused as an identity conflict.",
    )
    require_known_nodes = forms.BooleanField(
        label="Accept DICOM only from the listed remote nodes",
        required=False,
        help_text="Associations from other AE titles or hosts are refused.",
    )
    query_retrieve_from_any_node = forms.BooleanField(
        label="Answer queries and retrievals from any node",
        required=False,
        help_text="Off (recommended): C-FIND, C-MOVE and C-GET only for the listed remote "
        "nodes, by AE title and address. Anyone who can reach the gateway and guess the AE "
        "title could otherwise read every study.",
    )
    require_admin_2fa = forms.BooleanField(
        label="Admins must use two-factor authentication",
        required=False,
        help_text="Turning this on revokes the admins' full API tokens: they were created with "
        "a password alone. Admins create new ones once their authenticator is set up.",
    )


class CorsForm(forms.Form):
    cors_origins = forms.CharField(
        label="Allowed viewer origins",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "placeholder": "https://viewer.example.org"}),
        help_text="One origin per line: scheme://host[:port], no path and no wildcard. "
        "Browsers on these origins (e.g. OHIF) may read DICOMweb.",
    )

    def clean_cors_origins(self) -> list[str]:
        lines = self.cleaned_data["cors_origins"].splitlines()
        return [line.strip() for line in lines if line.strip()]


class ViewerForm(forms.Form):
    viewer_url_template = forms.CharField(
        label="Open studies in",
        required=False,
        max_length=500,
        widget=forms.URLInput(
            attrs={"placeholder": "https://viewer.example.org/viewer?StudyInstanceUIDs={study_uid}"}
        ),
        help_text="Empty: the viewer built into this portal. Otherwise another viewer's URL "
        "with {study_uid} and, for a series, {series_uid} where the UIDs go.",
    )


class AppearanceForm(forms.Form):
    accent_colour = forms.CharField(
        max_length=7,
        widget=forms.TextInput(attrs={"type": "color"}),
        help_text="Colour of the header line on every page of this archive.",
    )
    timezone = forms.CharField(
        label="Time zone",
        max_length=64,
        widget=forms.TextInput(attrs={"list": "timezones", "autocomplete": "off"}),
        help_text="IANA name such as Europe/Berlin; schedules and displayed times follow it.",
    )


class JobsForm(forms.Form):
    job_storage_usage = forms.BooleanField(label="Measure storage usage", required=False)
    job_watermark_migration = forms.BooleanField(
        label="Move studies off media above their high watermark", required=False
    )
    job_retention = forms.BooleanField(
        label="Apply retention rules (deletes studies)", required=False
    )
    job_verification = forms.BooleanField(label="Verify stored files", required=False)
    job_quarantine_purge = forms.BooleanField(label="Purge old quarantined files", required=False)
    job_node_echo = forms.BooleanField(
        label="Test every remote node with a C-ECHO each quarter of an hour", required=False
    )


SECTION_FORMS: dict[str, type[forms.Form]] = {
    "identity": IdentityForm,
    "policies": PoliciesForm,
    "cors": CorsForm,
    "viewer": ViewerForm,
    "appearance": AppearanceForm,
    "jobs": JobsForm,
}


class RemoteNodeForm(forms.Form):
    ae_title = forms.CharField(
        label="AE title", max_length=16, validators=[validate_ae_title], strip=False
    )
    host = forms.CharField(max_length=253, help_text="IP address or host name.")
    port = forms.IntegerField(min_value=1, max_value=65535, initial=104)
    description = forms.CharField(max_length=200, required=False)
    tls_certificate_sha256 = forms.CharField(
        label="TLS client certificate (SHA-256)",
        max_length=95,  # 64 hex digits with openssl's 31 colons
        required=False,
        validators=[validate_certificate_fingerprint],
        help_text="Optional. The fingerprint of the certificate this node presents on the "
        "DICOM TLS port (openssl x509 -noout -fingerprint -sha256 -in node.pem). When set, "
        "the node is recognised only over TLS with that certificate.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["ae_title"].widget.attrs["autofocus"] = True


class RetentionRuleForm(forms.Form):
    modality = forms.CharField(
        max_length=16,
        validators=[validate_modality],
        help_text="DICOM modality code (CT, MR, US, CR, DX, MG, PT, NM, XA, OT…) or * for all.",
    )
    days = forms.IntegerField(
        min_value=1,
        max_value=MAX_RETENTION_DAYS,
        help_text="Studies are deleted this many days after they were received.",
    )
    enabled = forms.BooleanField(required=False, initial=True)
    confirm_short = forms.BooleanField(
        label=f"I understand that a rule of less than {SHORT_RETENTION_DAYS} days deletes "
        "recent studies",
        required=False,
    )

    def __init__(self, *args: Any, rule: RetentionRule | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rule = rule
        self.fields["modality"].widget.attrs["autofocus"] = True

    def clean_modality(self) -> str:
        modality: str = self.cleaned_data["modality"]
        others = RetentionRule.objects.filter(modality=modality)
        if self.rule is not None:
            others = others.exclude(pk=self.rule.pk)
        if others.exists():
            raise ValidationError("A rule for this modality exists already; edit it instead.")
        return modality

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        days = data.get("days")
        if days is not None and days < SHORT_RETENTION_DAYS and not data.get("confirm_short"):
            self.add_error("confirm_short", SHORT_RETENTION_MESSAGE)
        return data

    def rule_values(self) -> dict[str, Any]:
        return {key: self.cleaned_data[key] for key in ("modality", "days", "enabled")}
