"""URLconf of every tenant site (below its host or `/t/<slug>/` prefix)."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from studies.views import DashboardView

urlpatterns = [
    path("", DashboardView.as_view(), name="home"),
    path("account/", include("portal.urls_accounts")),
    path("api/v1/", include("accounts.api.urls")),
    path(
        "api/schema/", SpectacularAPIView.as_view(urlconf="portal.urls_tenants"), name="api_schema"
    ),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api_schema"), name="api_docs"),
]
