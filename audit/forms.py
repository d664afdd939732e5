"""The audit log's filter form."""

from typing import Any

from django import forms

from audit.models import Outcome
from audit.selectors import AuditFilter


class AuditFilterForm(forms.Form):
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    actor = forms.CharField(required=False, max_length=150, label="User")
    action = forms.CharField(
        required=False,
        max_length=64,
        widget=forms.TextInput(attrs={"list": "actions"}),
        help_text="A prefix: “user” finds every user action.",
    )
    object_type = forms.CharField(required=False, max_length=64, label="Object type")
    object_id = forms.CharField(required=False, max_length=128, label="Object id")
    outcome = forms.ChoiceField(required=False, choices=[("", "any"), *Outcome.choices])

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            self.add_error("until", "The end date lies before the start date.")
        return data

    def criteria(self) -> AuditFilter:
        """The filter the valid fields describe (an invalid form filters nothing)."""
        data: dict[str, Any] = self.cleaned_data if self.is_valid() else {}
        return AuditFilter(
            since=data.get("since"),
            until=data.get("until"),
            actor=data.get("actor") or "",
            action=data.get("action") or "",
            object_type=data.get("object_type") or "",
            object_id=data.get("object_id") or "",
            outcome=data.get("outcome") or "",
        )
