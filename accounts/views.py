"""Login, logout and passwords; the same views serve the super-admin site and every tenant."""

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import HttpResponse
from django.shortcuts import render
from django.urls import reverse_lazy
from django.views.generic import ListView, TemplateView

from accounts.models import User
from accounts.permissions import Capability, CapabilityRequiredMixin
from accounts.services import set_password_tokens
from audit.models import Outcome
from audit.services import audit_record
from portal.routing import bind_session_to_schema


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    redirect_authenticated_user = True

    def form_valid(self, form):
        response = super().form_valid(form)  # rotates the session key
        bind_session_to_schema(self.request)
        audit_record(action="login.success", request=self.request, target=form.get_user())
        return response

    def form_invalid(self, form):
        audit_record(
            action="login.failure",
            request=self.request,
            outcome=Outcome.FAILURE,
            actor_name=str(form.data.get("username", ""))[:150],
            object_type="user",
        )
        return super().form_invalid(form)


class LogoutView(auth_views.LogoutView):
    next_page = "login"

    def post(self, request, *args, **kwargs):
        if request.user.is_authenticated:
            audit_record(action="logout", request=request, target=request.user)
        return super().post(request, *args, **kwargs)


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


class AccountView(LoginRequiredMixin, TemplateView):
    """My account: password, API tokens and second factor of the logged-in user."""

    template_name = "accounts/account.html"


class UserListView(CapabilityRequiredMixin, ListView):
    capability = Capability.USERS_MANAGE
    template_name = "accounts/user_list.html"
    context_object_name = "users"
    paginate_by = 50

    def get_queryset(self):  # type: ignore[no-untyped-def]
        return User.objects.order_by("username")


def locked_out(request, original_response=None, credentials=None):  # type: ignore[no-untyped-def]
    """What django-axes shows after too many failed logins: a clear page, status 429."""
    from django.conf import settings

    minutes = round(settings.AXES_COOLOFF_TIME * 60)
    username = (credentials or {}).get("username", "") or request.POST.get("username", "")
    audit_record(
        action="login.lockout",
        request=request,
        outcome=Outcome.DENIED,
        actor_name=str(username)[:150],
        object_type="user",
        details={"cooloff_minutes": minutes},
    )
    return render(request, "accounts/locked_out.html", {"minutes": minutes}, status=429)
