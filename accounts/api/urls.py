"""Routes of the tenant API about people: me/, users/, tokens/."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from accounts.api.views import MeView, TokenViewSet, UserViewSet

router = SimpleRouter()
router.register("users", UserViewSet, basename="user")
router.register("tokens", TokenViewSet, basename="token")

urlpatterns = [path("me/", MeView.as_view(), name="api_me"), *router.urls]
