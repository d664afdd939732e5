"""Pages of /upload/ (web upload and its ingest jobs)."""

from django.urls import path

from studies import upload_views

urlpatterns = [
    path("", upload_views.UploadView.as_view(), name="upload"),
]
