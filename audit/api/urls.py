"""API routes of the audit log."""

from rest_framework.routers import SimpleRouter

from audit.api.views import AuditEventViewSet

router = SimpleRouter()
router.register("audit", AuditEventViewSet, basename="audit-event")
urlpatterns = router.urls
