"""Pages of /storage/: the tenant's storage media."""

from django.urls import path

from studies.media import views

urlpatterns = [
    path("", views.StorageView.as_view(), name="storage"),
    path("refresh/", views.StorageRefreshView.as_view(), name="storage_refresh"),
    path("new/", views.MediumCreateView.as_view(), name="medium_create"),
    path("<int:pk>/", views.MediumDetailView.as_view(), name="medium_detail"),
    path("<int:pk>/edit/", views.MediumEditView.as_view(), name="medium_edit"),
    path("<int:pk>/status/", views.MediumStatusView.as_view(), name="medium_status"),
    path("<int:pk>/delete/", views.MediumDeleteView.as_view(), name="medium_delete"),
    path("<int:pk>/probe/", views.MediumProbeView.as_view(), name="medium_probe"),
]
