"""Routes of a tenant's API (grows with issue 3)."""

from django.urls import path

from accounts.api.views import MeView

urlpatterns = [path("me/", MeView.as_view(), name="api_me")]
