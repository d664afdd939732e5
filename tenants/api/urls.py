"""Routes of the super-admin API."""

from rest_framework.routers import SimpleRouter

from tenants.api.views import TenantViewSet, UsageRecordViewSet

router = SimpleRouter()
router.register("tenants", TenantViewSet, basename="tenant")
router.register("usage", UsageRecordViewSet, basename="usage")
urlpatterns = router.urls
