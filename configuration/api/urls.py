"""API routes of the tenant's configuration: settings/, nodes/, retention-rules/."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from configuration.api.views import NodeViewSet, RetentionRuleViewSet, SettingsView

router = SimpleRouter()
router.register("nodes", NodeViewSet, basename="node")
router.register("retention-rules", RetentionRuleViewSet, basename="retention-rule")

urlpatterns = [path("settings/", SettingsView.as_view(), name="api_settings"), *router.urls]
