"""Pages of /jobs/: ingest jobs and periodic job runs."""

from django.urls import path

from jobs import views

urlpatterns = [
    path("", views.JobListView.as_view(), name="jobs"),
]
