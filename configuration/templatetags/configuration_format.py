"""How configuration values and their names read on the history pages."""

from typing import Any

from django import template
from django.core.exceptions import FieldDoesNotExist

from configuration.models import RemoteNode, RetentionRule, SettingChange, TenantSettings

register = template.Library()

_MODELS = {"settings": TenantSettings, "node": RemoteNode, "retention rule": RetentionRule}
_IDENTITY_LABELS = {"display_name": "display name", "ae_title": "AE title"}


@register.filter
def setting_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "(none)"
    return str(value) if value != "" else "(empty)"


@register.filter
def setting_label(change: SettingChange) -> str:
    if change.field in _IDENTITY_LABELS:
        return _IDENTITY_LABELS[change.field]
    model = _MODELS.get(change.subject)
    if model is None:
        return change.field
    try:
        field = model._meta.get_field(change.field)
    except FieldDoesNotExist:
        return change.field
    return str(getattr(field, "verbose_name", change.field))
