"""Pages of /upload/ (web upload and its ingest jobs)."""

from django.urls import path

from studies.uploads import views as upload_views

urlpatterns = [
    path("", upload_views.UploadView.as_view(), name="upload"),
    path("<int:pk>/files/", upload_views.UploadFilesView.as_view(), name="upload_files"),
    path("<int:pk>/submit/", upload_views.UploadSubmitView.as_view(), name="upload_submit"),
    path("jobs/<int:pk>/", upload_views.IngestJobView.as_view(), name="ingest_job"),
    path(
        "jobs/<int:pk>/progress/",
        upload_views.IngestJobProgressView.as_view(),
        name="ingest_job_progress",
    ),
    path(
        "jobs/<int:pk>/items/<int:item_pk>/quarantine",
        upload_views.QuarantineDownloadView.as_view(),
        name="ingest_item_quarantine",
    ),
]
