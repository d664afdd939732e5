"""`/viewer/`: the OHIF viewer of the active tenant (its files are below STATIC_URL)."""

from django.urls import path

from studies.viewer import views

urlpatterns = [
    path("app-config.js", views.ViewerConfigView.as_view(), name="viewer_config"),
    path("", views.ViewerPageView.as_view(), name="viewer_page"),
    path("<path:path>", views.ViewerPageView.as_view(), name="viewer_route"),
]
