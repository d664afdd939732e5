"""URLconf of every tenant site (below its host or `/t/<slug>/` prefix)."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from studies.dashboard import DashboardView

api_v1 = [
    path("", include("accounts.api.urls")),
    path("", include("studies.api.urls")),
    path("", include("configuration.api.urls")),
    path("", include("audit.api.urls")),
]

urlpatterns = [
    path("", DashboardView.as_view(), name="home"),
    path("account/", include("portal.urls_accounts")),
    path("studies/", include("studies.index.urls")),
    path("upload/", include("studies.uploads.urls")),
    path("jobs/", include("jobs.urls")),
    path("users/", include("accounts.urls")),
    path("storage/", include("studies.media.urls")),
    path("settings/", include("configuration.urls")),
    path("audit/", include("audit.urls")),
    path("api/v1/", include(api_v1)),
    path("dicom-web/", include("studies.dicomweb.urls")),
    path("viewer/", include("studies.viewer.urls")),
    path(
        "api/schema/", SpectacularAPIView.as_view(urlconf="portal.urls_tenants"), name="api_schema"
    ),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api_schema"), name="api_docs"),
]
