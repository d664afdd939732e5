"""URLconf of the base domain: the super-admin site and its API."""

from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from tenants import views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="fleet"), name="home"),
    path("account/", include("portal.urls_accounts")),
    path("tenants/", views.FleetView.as_view(), name="fleet"),
    path("selftest/", views.SelftestView.as_view(), name="selftest"),
    path("platform/", views.PlatformView.as_view(), name="platform"),
    path("tenants/new/", views.TenantCreateView.as_view(), name="tenant_create"),
    path("tenants/usage.csv", views.UsageExportView.as_view(), name="usage_export"),
    path("tenants/<slug:slug>/", views.TenantDetailView.as_view(), name="tenant_detail"),
    path("tenants/<slug:slug>/usage/", views.TenantUsageView.as_view(), name="tenant_usage"),
    path("tenants/<slug:slug>/edit/", views.TenantEditView.as_view(), name="tenant_edit"),
    path(
        "tenants/<slug:slug>/suspend/",
        views.TenantActionView.as_view(action="suspend"),
        name="tenant_suspend",
    ),
    path(
        "tenants/<slug:slug>/resume/",
        views.TenantActionView.as_view(action="resume"),
        name="tenant_resume",
    ),
    path(
        "tenants/<slug:slug>/restore/",
        views.TenantActionView.as_view(action="restore"),
        name="tenant_restore",
    ),
    path("tenants/<slug:slug>/delete/", views.TenantDeleteView.as_view(), name="tenant_delete"),
    path(
        "tenants/<slug:slug>/admin-link/",
        views.TenantAdminLinkView.as_view(),
        name="tenant_admin_link",
    ),
    path("tenants/<slug:slug>/domains/", views.DomainAddView.as_view(), name="domain_add"),
    path(
        "tenants/<slug:slug>/domains/<int:pk>/delete/",
        views.DomainRemoveView.as_view(),
        name="domain_remove",
    ),
    path("api/v1/", include("tenants.api.urls")),
    path(
        "api/schema/", SpectacularAPIView.as_view(urlconf="portal.urls_public"), name="api_schema"
    ),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api_schema"), name="api_docs"),
]
