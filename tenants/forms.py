"""Super-admin forms; validation lives in the model and services, forms only collect input."""

from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from tenants.models import Tenant
from tenants.selectors import ae_title_holder
from tenants.validators import schema_name_for, validate_ae_title, validate_slug

GIB = 1 << 30


class TenantCreateForm(forms.Form):
    slug = forms.CharField(
        max_length=32,
        validators=[validate_slug],
        help_text="Lowercase DNS label, e.g. st-marys. Becomes the tenant's host name; "
        "it cannot be changed later.",
        widget=forms.TextInput(
            attrs={"autofocus": True, "autocomplete": "off", "pattern": "[a-z0-9-]+"}
        ),
    )
    name = forms.CharField(max_length=200, label="Display name")
    admin_email = forms.EmailField(
        label="Admin e-mail", help_text="The tenant admin gets a one-time set-password link."
    )
    ae_title = forms.CharField(
        max_length=16,
        required=False,
        label="AE title",
        validators=[validate_ae_title],
        help_text="Called AE title for DICOM (optional, e.g. ACME).",
    )
    quota_gib = forms.IntegerField(
        min_value=1, label="Storage quota (GiB)", initial=settings.PORTAL_DEFAULT_QUOTA_BYTES // GIB
    )
    quota_users = forms.IntegerField(
        min_value=1, label="User quota", initial=settings.PORTAL_DEFAULT_QUOTA_USERS
    )
    storage_root = forms.CharField(
        max_length=1024,
        required=False,
        label="Allowed storage root",
        help_text=f"Leave empty for {settings.PORTAL_STORAGE_ROOT}/<slug>.",
    )

    def clean_slug(self) -> str:
        slug = self.cleaned_data["slug"]
        if Tenant.all_objects.filter(slug=slug).exists():
            raise forms.ValidationError("A tenant with this slug exists (slugs are never reused).")
        return slug

    def clean_ae_title(self) -> str | None:
        value = self.cleaned_data["ae_title"] or None
        holder = ae_title_holder(value) if value else None
        if holder is not None:
            raise forms.ValidationError(
                f"Tenant {holder.slug} uses or used this AE title (in any case); titles are "
                "never reused."
            )
        return value

    def clean(self) -> dict[str, Any]:
        """The services' rules too (storage root, quotas, AE title), so that every problem of
        the form is reported at once, not the services' only after the fields are fixed."""
        from tenants.services import default_storage_root, tenant_rules_check

        data = super().clean() or {}
        slug = data.get("slug") or "x"
        provisional = Tenant(
            slug=slug,
            name=data.get("name") or "x",
            schema_name=schema_name_for(slug),
            ae_title=data.get("ae_title") or None,
            quota_bytes=(data.get("quota_gib") or 1) * GIB,
            quota_users=data.get("quota_users") or 1,
            storage_root=data.get("storage_root") or str(default_storage_root(slug)),
        )
        try:
            tenant_rules_check(provisional, existing=False)
        except ValidationError as error:
            for field, messages in error.message_dict.items():
                name = {"quota_bytes": "quota_gib"}.get(field, field)
                if name in self.fields and name not in self.errors:
                    self.add_error(name, messages)
        return data


class TenantEditForm(forms.ModelForm):
    quota_gib = forms.IntegerField(min_value=1, label="Storage quota (GiB)")

    class Meta:
        model = Tenant
        fields = ["name", "ae_title", "quota_users", "storage_root"]

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["quota_gib"].initial = max(1, self.instance.quota_bytes // GIB)
        self.order_fields(["name", "ae_title", "quota_gib", "quota_users", "storage_root"])


class TenantDeleteForm(forms.Form):
    confirm_slug = forms.CharField(
        label="Type the tenant's slug to confirm",
        widget=forms.TextInput(attrs={"autocomplete": "off", "autofocus": True}),
    )


class TenantSuspendForm(forms.Form):
    reason = forms.CharField(
        max_length=500, required=False, help_text="Shown in the tenant's history."
    )


class DomainForm(forms.Form):
    domain = forms.CharField(
        max_length=253,
        label="Custom domain",
        widget=forms.TextInput(attrs={"placeholder": "pacs.hospital.example"}),
    )
