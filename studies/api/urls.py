"""API routes of storage media (studies join them in later issues)."""

from rest_framework.routers import SimpleRouter

from studies.api.views import MediumViewSet

router = SimpleRouter()
router.register("media", MediumViewSet, basename="medium")
urlpatterns = router.urls

# Studies (issue 4): registered after the media so the existing routes keep their order.
from studies.api.studies import StudyViewSet  # noqa: E402

router.register("studies", StudyViewSet, basename="study")
urlpatterns = router.urls

# Ingest (issue 4): send files and follow their job.
from django.urls import path  # noqa: E402

from studies.api import ingest  # noqa: E402

urlpatterns += [
    path("ingest/", ingest.IngestCreateView.as_view(), name="api_ingest"),
    path("ingest/<int:pk>/", ingest.IngestJobDetailView.as_view(), name="api_ingest_job"),
    path("ingest/<int:pk>/items/", ingest.IngestItemListView.as_view(), name="api_ingest_items"),
]
