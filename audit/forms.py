"""The audit log's filter form."""

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

    def clean(self):  # type: ignore[no-untyped-def]
        data = super().clean()
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            self.add_error("until", "The end date lies before the start date.")
        return data

    def criteria(self) -> AuditFilter:
        data = self.cleaned_data if self.is_valid() else {}
        return AuditFilter(
            **{
                name: data.get(name) or ("" if name not in {"since", "until"} else None)
                for name in AuditFilter.__dataclass_fields__
            }
        )
