"""API routes of storage media (studies join them in later issues)."""

from rest_framework.routers import SimpleRouter

from studies.api.views import MediumViewSet

router = SimpleRouter()
router.register("media", MediumViewSet, basename="medium")
urlpatterns = router.urls
