"""Pages of /storage/: the tenant's storage media."""

from django.urls import path

from studies import views

urlpatterns = [
    path("", views.StorageView.as_view(), name="storage"),
]
