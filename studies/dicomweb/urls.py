"""DICOMweb routes (PS3.18 chapter 10 resources), below the tenant site's `/dicom-web/`.

UIDs are taken as plain strings and checked by the views, so a malformed one is a 400
with its reason rather than an unexplained 404.
"""

from django.urls import path

from studies.dicomweb import qido, stow, wado
from studies.dicomweb.access import by_method

STUDY = "studies/<str:study>"
SERIES = f"{STUDY}/series/<str:series>"
INSTANCE = f"{SERIES}/instances/<str:instance>"

urlpatterns = [
    # Search (QIDO-RS) and store (STOW-RS).
    path(
        "studies",
        by_method(get=qido.StudySearchView.as_view(), post=stow.StoreView.as_view()),
        name="dicomweb_studies",
    ),
    path("series", qido.SeriesSearchView.as_view(), name="dicomweb_series_search"),
    path("instances", qido.InstanceSearchView.as_view(), name="dicomweb_instance_search"),
    path(f"{STUDY}/series", qido.SeriesSearchView.as_view(), name="dicomweb_study_series"),
    path(f"{STUDY}/instances", qido.InstanceSearchView.as_view(), name="dicomweb_study_instances"),
    path(
        f"{SERIES}/instances",
        qido.InstanceSearchView.as_view(),
        name="dicomweb_series_instances",
    ),
    # Retrieve (WADO-RS).
    path(
        STUDY,
        by_method(get=wado.RetrieveView.as_view(), post=stow.StoreView.as_view()),
        name="dicomweb_study",
    ),
    path(SERIES, wado.RetrieveView.as_view(), name="dicomweb_series"),
    path(INSTANCE, wado.RetrieveView.as_view(), name="dicomweb_instance"),
    path(f"{STUDY}/metadata", wado.MetadataView.as_view(), name="dicomweb_study_metadata"),
    path(f"{SERIES}/metadata", wado.MetadataView.as_view(), name="dicomweb_series_metadata"),
    path(f"{INSTANCE}/metadata", wado.MetadataView.as_view(), name="dicomweb_instance_metadata"),
    path(f"{INSTANCE}/frames/<str:frames>", wado.FramesView.as_view(), name="dicomweb_frames"),
    path(
        f"{INSTANCE}/frames/<str:frames>/rendered",
        wado.RenderedView.as_view(),
        name="dicomweb_frame_rendered",
    ),
    path(f"{INSTANCE}/bulk/<str:tag>", wado.BulkDataView.as_view(), name="dicomweb_bulkdata"),
    path(f"{STUDY}/rendered", wado.RenderedView.as_view(), name="dicomweb_study_rendered"),
    path(f"{SERIES}/rendered", wado.RenderedView.as_view(), name="dicomweb_series_rendered"),
    path(f"{INSTANCE}/rendered", wado.RenderedView.as_view(), name="dicomweb_instance_rendered"),
    path(f"{STUDY}/thumbnail", wado.ThumbnailView.as_view(), name="dicomweb_study_thumbnail"),
    path(f"{SERIES}/thumbnail", wado.ThumbnailView.as_view(), name="dicomweb_series_thumbnail"),
    path(
        f"{INSTANCE}/thumbnail",
        wado.ThumbnailView.as_view(),
        name="dicomweb_instance_thumbnail",
    ),
    # WADO-URI (PS3.18 chapter 9) for older viewers: ?requestType=WADO&studyUID=...
    path("wado", wado.WadoUriView.as_view(), name="dicomweb_wado_uri"),
]
