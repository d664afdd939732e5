"""Pages of /jobs/: ingest jobs and periodic job runs."""

from django.urls import path

from jobs import views

urlpatterns = [
    path("", views.JobListView.as_view(), name="jobs"),
    path("runs/<int:pk>/retry/", views.JobRunRetryView.as_view(), name="job_run_retry"),
    path("ingest/<int:pk>/retry/", views.IngestJobRetryView.as_view(), name="ingest_job_retry"),
]
