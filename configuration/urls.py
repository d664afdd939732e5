"""Pages of /settings/."""

from django.urls import path

from configuration import views

urlpatterns = [
    path("", views.SettingsView.as_view(), name="settings"),
]
