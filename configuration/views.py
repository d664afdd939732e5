"""The tenant's configuration pages (/settings/)."""

from typing import Any

from django.views.generic import TemplateView

from accounts.permissions import Capability, CapabilityRequiredMixin


class SettingsView(CapabilityRequiredMixin, TemplateView):
    capability = Capability.SETTINGS_VIEW
    template_name = "configuration/settings.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return super().get_context_data(tenant=self.request.tenant, **kwargs)  # type: ignore[attr-defined]
