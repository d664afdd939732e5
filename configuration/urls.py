"""Pages of /settings/."""

from django.urls import path

from configuration import views

urlpatterns = [
    path("", views.SettingsView.as_view(), name="settings"),
    path("ohif.json", views.OhifConfigView.as_view(), name="settings_ohif"),
    path("history/", views.SettingChangeListView.as_view(), name="settings_history"),
    path("nodes/new/", views.NodeFormView.as_view(), name="settings_node_create"),
    path("nodes/<int:pk>/", views.NodeFormView.as_view(), name="settings_node_edit"),
    path("nodes/<int:pk>/delete/", views.NodeDeleteView.as_view(), name="settings_node_delete"),
    path("nodes/<int:pk>/echo/", views.NodeEchoView.as_view(), name="settings_node_echo"),
    path("retention/new/", views.RetentionFormView.as_view(), name="settings_retention_create"),
    path("retention/<int:pk>/", views.RetentionFormView.as_view(), name="settings_retention_edit"),
    path(
        "retention/<int:pk>/delete/",
        views.RetentionDeleteView.as_view(),
        name="settings_retention_delete",
    ),
]
