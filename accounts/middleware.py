"""Holds admins at the 2FA setup page while their site (a tenant, or the platform for
super-admins) requires a second factor."""

from collections.abc import Callable

from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import Resolver404, resolve, reverse

from accounts import selectors

# Pages an admin without a second factor can still reach: the way to set one up, and out.
OPEN_PAGES = frozenset({"two_factor", "login", "login_verify", "logout", "set_password"})


class AdminSecondFactorMiddleware:
    """After django_otp's middleware: an admin session that is not verified by a code is sent
    to /account/2fa/ (no device yet) or logged out (a device exists, this session predates
    it) whenever the tenant's settings make a second factor mandatory for admins."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.hold(request)
        return response if response is not None else self.get_response(request)

    def hold(self, request: HttpRequest) -> HttpResponse | None:
        tenant = getattr(request, "tenant", None)
        user = getattr(request, "user", None)
        if tenant is None or user is None or not user.is_authenticated:
            return None
        if not selectors.is_site_admin(user) or user.is_verified():
            return None
        try:
            page = resolve(request.path_info, urlconf=getattr(request, "urlconf", None))
        except Resolver404:
            return None
        if page.url_name in OPEN_PAGES or not selectors.admin_second_factor_required():
            return None
        if selectors.has_second_factor(user):
            logout(request)
            target = reverse("login")
        else:
            target = reverse("two_factor")
        if request.path_info.startswith("/api/"):
            return JsonResponse(
                {
                    "detail": "This site requires admins to use two-factor authentication; "
                    f"set it up at {target} first."
                },
                status=403,
            )
        if request.headers.get("HX-Request"):
            response = HttpResponse(status=204)
            response["HX-Redirect"] = target
            return response
        return redirect(target)
