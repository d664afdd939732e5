"""Forms of the users, tokens and second-factor pages; the rules themselves live in services."""

from datetime import datetime, time, timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from accounts.models import Role, TokenScope, User
from accounts.selectors import UserFilter

STATUS_CHOICES = [("", "any"), ("active", "active"), ("deactivated", "deactivated")]


def apply_service_errors(form: forms.Form, error: ValidationError) -> None:
    """Put a service's ValidationError next to the matching fields (the rest on top)."""
    if hasattr(error, "error_dict"):
        for field, errors in error.error_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, error)


class UserFilterForm(forms.Form):
    q = forms.CharField(
        required=False,
        max_length=150,
        label="Search",
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "username, e-mail, name"}),
    )
    role = forms.ChoiceField(required=False, choices=[("", "any"), *Role.choices])
    status = forms.ChoiceField(required=False, choices=STATUS_CHOICES)

    def criteria(self) -> UserFilter:
        data = self.cleaned_data if self.is_valid() else {}
        status = data.get("status", "")
        return UserFilter(
            query=data.get("q", ""),
            role=data.get("role", ""),
            is_active={"active": True, "deactivated": False}.get(status),
        )


class UserInviteForm(forms.Form):
    username = forms.CharField(
        max_length=150,
        help_text="What they log in with: letters, digits and @ . + - _ only.",
        widget=forms.TextInput(attrs={"autofocus": True, "autocomplete": "off"}),
    )
    email = forms.EmailField(label="E-mail", help_text="The set-password link is sent here.")
    first_name = forms.CharField(max_length=150, required=False, label="First name")
    last_name = forms.CharField(max_length=150, required=False, label="Last name")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)


class UserEditForm(forms.Form):
    email = forms.EmailField(label="E-mail", widget=forms.EmailInput(attrs={"autofocus": True}))
    first_name = forms.CharField(max_length=150, required=False, label="First name")
    last_name = forms.CharField(max_length=150, required=False, label="Last name")
    role = forms.ChoiceField(choices=Role.choices)

    @classmethod
    def for_user(cls, user: User, data: Any = None) -> "UserEditForm":
        initial = {f: getattr(user, f) for f in ("email", "first_name", "last_name", "role")}
        return cls(data, initial=initial)


class TokenCreateForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        help_text="What uses it, e.g. “CT scanner uploads” or “nightly export script”.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    scope = forms.ChoiceField(
        choices=TokenScope.choices,
        help_text="Give a script no more than it needs: a modality only stores, "
        "a viewer only reads.",
    )
    expires_on = forms.DateField(
        required=False,
        label="Expires after",
        help_text="The token stops working at the end of this day.",
        widget=forms.DateInput(attrs={"type": "date"}),
    )

    def __init__(self, *args: Any, scopes: list[TokenScope], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["scope"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [(s.value, s.label) for s in scopes]
        field.initial = scopes[-1].value if scopes else None
        days = settings.PORTAL_TOKEN_DEFAULT_DAYS
        self.fields["expires_on"].help_text += f" Empty: after {days} days." if days else ""
        if scopes == [TokenScope.FULL]:
            field.help_text = "A token acts with all your rights."

    def clean_expires_on(self) -> Any:
        """Checked with the other fields (the service checks again), so that a past day and
        a missing name are reported in one round."""
        day = self.cleaned_data.get("expires_on")
        if day is not None and day < timezone.localdate():
            raise ValidationError("The expiry date has passed; choose a later one or none.")
        return day

    def expires_at(self) -> datetime | None:
        """The end of the chosen day in the site's time zone."""
        day = self.cleaned_data.get("expires_on")
        if day is None:
            return None
        return timezone.make_aware(datetime.combine(day + timedelta(days=1), time.min))

    def create_token(self, *, user: Any, request: Any) -> tuple[Any, str] | None:
        """Create the token from the valid form: (token, raw value), or None with the
        service's errors put next to the fields."""
        from accounts import services

        try:
            return services.api_token_create(
                request=request,
                user=user,
                name=self.cleaned_data["name"],
                scope=self.cleaned_data["scope"],
                expires_at=self.expires_at(),
            )
        except ValidationError as error:
            self.apply_service_errors(error)
            return None

    def apply_service_errors(self, error: ValidationError) -> None:
        if hasattr(error, "error_dict") and "expires_at" in error.error_dict:
            error.error_dict["expires_on"] = error.error_dict.pop("expires_at")
        apply_service_errors(self, error)


class CodeForm(forms.Form):
    """One 6-digit code from an authenticator app."""

    code = forms.RegexField(
        regex=r"^\s*\d{3}\s?\d{3}\s*$",
        label="6-digit code",
        error_messages={"invalid": "Type the 6 digits your authenticator app shows."},
        widget=forms.TextInput(
            attrs={
                "autofocus": True,
                "autocomplete": "one-time-code",
                "inputmode": "numeric",
                "pattern": "[0-9 ]*",
                "maxlength": 7,
                "size": 8,
            }
        ),
    )

    def clean_code(self) -> str:
        return "".join(str(self.cleaned_data["code"]).split())
