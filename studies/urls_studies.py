"""Pages of /studies/ (search, study detail, download, delete)."""

from django.urls import path

from studies import study_views

urlpatterns = [
    path("", study_views.StudyListView.as_view(), name="study_list"),
]
