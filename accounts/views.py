"""Login, logout and passwords; the same views serve the super-admin site and every tenant."""

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.http import HttpResponse
from django.urls import reverse_lazy

from accounts.services import set_password_tokens
from portal.routing import bind_session_to_schema


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    redirect_authenticated_user = True

    def form_valid(self, form):
        response = super().form_valid(form)  # rotates the session key
        bind_session_to_schema(self.request)
        return response


class LogoutView(auth_views.LogoutView):
    next_page = "login"


class PasswordChangeView(auth_views.PasswordChangeView):
    template_name = "accounts/password_change.html"
    success_url = reverse_lazy("home")

    def form_valid(self, form):
        response = super().form_valid(form)
        bind_session_to_schema(self.request)
        messages.success(self.request, "Your password was changed.")
        return response


class SetPasswordView(auth_views.PasswordResetConfirmView):
    """The one-time link from an invitation or reset: choose a password, then log in."""

    template_name = "accounts/set_password.html"
    token_generator = set_password_tokens
    success_url = reverse_lazy("login")
    post_reset_login = False

    def form_valid(self, form) -> HttpResponse:
        response = super().form_valid(form)
        messages.success(self.request, "Your password is set. Log in with it now.")
        return response
