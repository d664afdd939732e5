"""Pages of /audit/."""

from django.urls import path

from audit import views

urlpatterns = [
    path("", views.AuditListView.as_view(), name="audit"),
    path("export.csv", views.AuditExportView.as_view(), name="audit_export"),
]
