"""Pages of /studies/ (search, study, series and instance detail, thumbnails, download,
delete)."""

from django.urls import path, register_converter

from studies.index import views


class UidConverter:
    """A DICOM UID: digits and dots, at most 64 characters (anything else is a 404)."""

    regex = r"[0-9][0-9.]{0,63}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(UidConverter, "uid")

urlpatterns = [
    path("", views.StudyListView.as_view(), name="study_list"),
    path("bulk/", views.StudyBulkView.as_view(), name="study_bulk"),
    path("remote/", views.RemoteQueryView.as_view(), name="remote_query"),
    path("<uid:study_uid>/", views.StudyDetailView.as_view(), name="study_detail"),
    path(
        "<uid:study_uid>/series/<uid:series_uid>/",
        views.SeriesDetailView.as_view(),
        name="series_detail",
    ),
    path(
        "<uid:study_uid>/series/<uid:series_uid>/instances/<uid:sop_uid>/",
        views.InstanceDetailView.as_view(),
        name="instance_detail",
    ),
    path(
        "<uid:study_uid>/series/<uid:series_uid>/thumbnail.png",
        views.SeriesThumbnailView.as_view(),
        name="series_thumbnail",
    ),
    path(
        "<uid:study_uid>/download.zip",
        views.StudyDownloadView.as_view(),
        name="study_download",
    ),
    path("<uid:study_uid>/delete/", views.StudyDeleteView.as_view(), name="study_delete"),
    path("<uid:study_uid>/send/", views.StudySendView.as_view(), name="study_send"),
    path("sends/<int:pk>/", views.SendJobView.as_view(), name="send_job"),
    path("remote/retrieve/", views.RetrieveView.as_view(), name="remote_retrieve"),
    path("retrievals/<int:pk>/", views.RetrieveJobView.as_view(), name="retrieve_job"),
]
