"""Login (with its optional second step), account, tokens, 2FA and the tenant's /users/ pages.

The account pages serve the super-admin site and every tenant; /users/ exists on tenants only.
"""

from base64 import b32encode
from functools import cached_property
from typing import Any, cast
from urllib.parse import quote, urlencode

import segno
from axes.handlers.proxy import AxesProxyHandler
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse, reverse_lazy
from django.utils.cache import add_never_cache_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.views import View
from django.views.generic import ListView, TemplateView
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts import selectors, services
from accounts.forms import (
    CodeForm,
    TokenCreateForm,
    UserEditForm,
    UserFilterForm,
    UserInviteForm,
    apply_service_errors,
)
from accounts.models import ApiToken, Role, User
from accounts.permissions import Capability, CapabilityRequiredMixin, has_capability
from accounts.services import set_password_tokens
from audit.selectors import AuditFilter, audit_search
from audit.services import audit_record
from portal.routing import bind_session_to_schema
from portal.schemas import current_schema
from tenants.models import Tenant


def _tenant(request: HttpRequest) -> Tenant:
    return request.tenant  # type: ignore[attr-defined]


def _safe_next(request: HttpRequest, fallback: str) -> str:
    """`next` if it is a path on this site, else `fallback`. Only paths: `redirect()` would
    take a bare word for a view name, and a header cannot carry control characters."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if (
        target.startswith("/")
        and target.isprintable()
        and len(target) <= 2000
        and url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        )
    ):
        return target
    return fallback


class LoginView(auth_views.LoginView):
    """Password first; users with an authenticator then give a code on the verify page."""

    template_name = "accounts/login.html"
    redirect_authenticated_user = True

    def form_valid(self, form: Any) -> HttpResponse:
        user = form.get_user()
        if selectors.has_second_factor(user):
            services.login_pending_start(
                request=self.request, user=user, redirect_to=self.get_success_url()
            )
            return redirect("login_verify")
        services.login_complete(request=self.request, user=user)
        if selectors.second_factor_missing(user):
            return redirect("two_factor")
        return HttpResponseRedirect(self.get_success_url())

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # Attempts refused by an existing lockout are reported by the lockout page instead.
        credentials = {"username": request.POST.get("username", "")}
        self.locked_before = not AxesProxyHandler.is_allowed(request, credentials)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form: Any) -> HttpResponse:
        if not self.locked_before:
            services.login_failure_record(
                request=self.request, username=str(form.data.get("username", ""))
            )
        return super().form_invalid(form)


class LoginVerifyView(View):
    """Second step of a login: the code of the user's authenticator app."""

    template_name = "accounts/login_verify.html"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        self.pending = selectors.pending_login(request)
        if self.pending is None:
            services.login_pending_clear(request=request)
            messages.info(request, "Please log in again: the code step has expired.")
            return redirect("login")
        return super().dispatch(request, *args, **kwargs)

    def get(self, request: HttpRequest) -> HttpResponse:
        return render(request, self.template_name, {"form": CodeForm()})

    def post(self, request: HttpRequest) -> HttpResponse:
        assert self.pending is not None
        user = self.pending.user
        credentials = {"username": user.get_username()}
        if not AxesProxyHandler.is_allowed(request, credentials):
            services.login_pending_clear(request=request)
            return locked_out(request, None, credentials)
        form = CodeForm(request.POST)
        if form.is_valid():
            if services.login_second_factor(
                request=request,
                user=user,
                code=form.cleaned_data["code"],
                backend=self.pending.backend,
            ):
                return HttpResponseRedirect(self.pending.redirect_to)
            if getattr(request, "axes_locked_out", False):
                services.login_pending_clear(request=request)  # the lockout page follows
            wait = selectors.second_factor_wait_seconds(user)
            form.add_error(
                "code",
                f"Too many wrong codes in a row: wait {wait} seconds, then try again."
                if wait
                else services.WRONG_CODE_MESSAGE,
            )
        return render(request, self.template_name, {"form": form})


class LogoutView(auth_views.LogoutView):
    next_page = "login"

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.user.is_authenticated:
            audit_record(action="logout", request=request, target=request.user)
        return super().post(request, *args, **kwargs)


class PasswordChangeView(auth_views.PasswordChangeView):
    template_name = "accounts/password_change.html"
    success_url = reverse_lazy("home")

    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        bind_session_to_schema(self.request)
        services.password_change_record(request=self.request, user=form.user, via="account")
        messages.success(self.request, "Your password was changed.")
        return response


class SetPasswordView(auth_views.PasswordResetConfirmView):
    """The one-time link from an invitation or reset: choose a password, then log in."""

    template_name = "accounts/set_password.html"
    token_generator = set_password_tokens
    success_url = reverse_lazy("login")
    post_reset_login = False

    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        services.password_change_record(request=self.request, user=form.user, via="link")
        messages.success(self.request, "Your password is set. Log in with it now.")
        return response


class AccountView(LoginRequiredMixin, TemplateView):
    """My account: password, API tokens and second factor of the logged-in user."""

    template_name = "accounts/account.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        user = self.request.user
        assert isinstance(user, User)
        tokens = selectors.token_list(user=user)
        return super().get_context_data(
            has_second_factor=selectors.has_second_factor(user),
            second_factor_required=selectors.second_factor_missing(user),
            active_tokens=sum(1 for t in tokens if t.status == "active"),
            **kwargs,
        )


# --- API tokens -------------------------------------------------------------------------


def _may_manage_others_tokens(request: HttpRequest) -> bool:
    """Tenant admins see and revoke everyone's tokens; on the platform, each their own."""
    return current_schema() != "public" and has_capability(request.user, Capability.USERS_MANAGE)


def _token_created(request: HttpRequest, token: ApiToken, raw: str, back_url: str) -> HttpResponse:
    # Rendered, not redirected: the raw token exists only in this response (kept out of caches).
    response = render(
        request,
        "accounts/token_created.html",
        {"token": token, "raw": raw, "back_url": back_url},
    )
    add_never_cache_headers(response)
    return response


class TokenListView(CapabilityRequiredMixin, View):
    """/account/tokens/: the caller's own tokens and a form for a new one."""

    capability = Capability.TOKENS_OWN
    template_name = "accounts/token_list.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        return self.page(self.form())

    def post(self, request: HttpRequest) -> HttpResponse:
        form = self.form(request.POST)
        created = form.create_token(user=self.user, request=request) if form.is_valid() else None
        if created is not None:
            return _token_created(request, *created, reverse("token_list"))
        return self.page(form)

    @cached_property
    def user(self) -> User:
        assert isinstance(self.request.user, User)
        return self.request.user

    def form(self, data: Any = None) -> TokenCreateForm:
        form = TokenCreateForm(data, scopes=selectors.token_scopes_for(self.user))
        form.fields["name"].widget.attrs["autofocus"] = True
        return form

    def page(self, form: TokenCreateForm) -> HttpResponse:
        return render(
            self.request,
            self.template_name,
            {
                "tokens": selectors.token_list(user=self.user),
                "form": form,
                "next": reverse("token_list"),
            },
        )


class TokenRevokeView(CapabilityRequiredMixin, View):
    """Confirm (GET, a page like every other destructive action's) and revoke (POST)."""

    capability = Capability.TOKENS_OWN

    def token(self, pk: int) -> ApiToken:
        tokens = selectors.token_list()
        if not _may_manage_others_tokens(self.request):
            tokens = tokens.filter(user=cast(User, self.request.user))
        return get_object_or_404(tokens, pk=pk)

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        token = self.token(pk)
        return render(
            request,
            "accounts/confirm.html",
            {
                "title": f"Revoke the token “{token.name}”?",
                "message": f"Scripts that use {token.prefix}… stop working at once. "
                "A revoked token cannot be restored; create a new one instead.",
                "button": "Revoke token",
                "next": _safe_next(request, reverse("token_list")),
            },
        )

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        token = services.api_token_revoke(request=request, token=self.token(pk))
        messages.success(request, f"Revoked the token “{token.name}”.")
        return redirect(_safe_next(request, reverse("token_list")))


# --- second factor ----------------------------------------------------------------------


def _otp_issuer(request: HttpRequest) -> str:
    tenant = getattr(request, "tenant", None)
    issuer = (
        tenant.name if tenant is not None and not tenant.is_public else settings.OTP_TOTP_ISSUER
    )
    return issuer.replace(":", "")  # the colon separates issuer and account in the label


def _otp_setup(request: HttpRequest, device: TOTPDevice) -> dict[str, Any]:
    """What an authenticator app needs: the otpauth URI as a QR code, and the secret typed."""
    issuer = _otp_issuer(request)
    secret = b32encode(device.bin_key).decode().rstrip("=")
    label = quote(f"{issuer}:{device.user.get_username()}")
    params = urlencode(
        {"secret": secret, "issuer": issuer, "algorithm": "SHA1", "digits": 6, "period": 30}
    )
    uri = f"otpauth://totp/{label}?{params}"
    svg = segno.make(uri, error="m").svg_inline(
        scale=4, border=2, title="QR code for your authenticator app", svgclass="qr"
    )
    return {
        "qr_svg": mark_safe(svg),  # noqa: S308 - segno's own SVG of a URI we built
        "secret": " ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
        "otpauth_uri": uri,
    }


class TwoFactorView(LoginRequiredMixin, View):
    """/account/2fa/: set up an authenticator app, or turn it off again."""

    template_name = "accounts/two_factor.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        return self.page(CodeForm())

    def post(self, request: HttpRequest) -> HttpResponse:
        form = CodeForm(request.POST)
        disabling = request.POST.get("action") == "disable"
        if form.is_valid():
            try:
                if disabling:
                    services.otp_disable(
                        request=request, user=self.user, code=form.cleaned_data["code"]
                    )
                    messages.success(request, "Two-factor authentication is off.")
                else:
                    services.otp_enable(
                        request=request, user=self.user, code=form.cleaned_data["code"]
                    )
                    messages.success(
                        request,
                        "Two-factor authentication is on: you will be asked for a code "
                        "after your password from now on.",
                    )
            except ValidationError as error:
                apply_service_errors(form, error)
            else:
                return redirect("account")
        return self.page(form)

    @cached_property
    def user(self) -> User:
        assert isinstance(self.request.user, User)
        return self.request.user

    def page(self, form: CodeForm) -> HttpResponse:
        enabled = selectors.has_second_factor(self.user)
        context: dict[str, Any] = {
            "enabled": enabled,
            "form": form,
            "required": selectors.is_site_admin(self.user)
            and selectors.admin_second_factor_required(),
            "missing": selectors.second_factor_missing(self.user),
        }
        if not enabled:
            context.update(_otp_setup(self.request, services.otp_device_prepare(user=self.user)))
        response = render(self.request, self.template_name, context)
        add_never_cache_headers(response)  # the page may show the authenticator's secret
        return response


# --- the tenant's users (/users/) -------------------------------------------------------


class UserListView(CapabilityRequiredMixin, ListView):
    capability = Capability.USERS_MANAGE
    template_name = "accounts/user_list.html"
    context_object_name = "users"
    paginate_by = 50

    def get_queryset(self) -> QuerySet[User]:
        self.form = UserFilterForm(self.request.GET or None)
        return selectors.user_search(self.form.criteria())

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        query = self.request.GET.copy()
        query.pop("page", None)
        return super().get_context_data(
            form=self.form,
            filter_query=query.urlencode(),
            active_count=selectors.active_user_count(),
            quota=_tenant(self.request).quota_users,
            **kwargs,
        )


def _link_page(
    request: HttpRequest, link: services.SetPasswordLink, *, invited: bool
) -> HttpResponse:
    # Rendered, not redirected: the link is shown this once and kept nowhere (nor in caches).
    response = render(
        request,
        "accounts/user_link.html",
        {"target": link.user, "url": link.url, "invited": invited},
    )
    add_never_cache_headers(response)
    return response


class UserInviteView(CapabilityRequiredMixin, View):
    capability = Capability.USERS_MANAGE
    template_name = "accounts/user_invite.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        return self.page(UserInviteForm())

    def post(self, request: HttpRequest) -> HttpResponse:
        form = UserInviteForm(request.POST)
        if form.is_valid():
            try:
                link = services.user_invite(
                    request=request, tenant=_tenant(request), **form.cleaned_data
                )
            except ValidationError as error:
                apply_service_errors(form, error)
            else:
                return _link_page(request, link, invited=True)
        return self.page(form)

    def page(self, form: UserInviteForm) -> HttpResponse:
        return render(
            self.request,
            self.template_name,
            {
                "form": form,
                "active_count": selectors.active_user_count(),
                "quota": _tenant(self.request).quota_users,
            },
        )


class TargetUserMixin(CapabilityRequiredMixin):
    """Pages about one user of the tenant, for those who manage users."""

    capability = Capability.USERS_MANAGE
    request: HttpRequest
    kwargs: dict[str, Any]

    @cached_property
    def target(self) -> User:
        return get_object_or_404(User, pk=self.kwargs["pk"])

    def back(self) -> HttpResponse:
        return redirect("user_detail", pk=self.target.pk)


class UserDetailView(TargetUserMixin, View):
    template_name = "accounts/user_detail.html"

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        return self.page(self.token_form())

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        """A token for this user, e.g. a store-only token for a modality's service account."""
        form = self.token_form(request.POST)
        created = form.create_token(user=self.target, request=request) if form.is_valid() else None
        if created is not None:
            return _token_created(request, *created, reverse("user_detail", args=[self.target.pk]))
        return self.page(form)

    def token_form(self, data: Any = None) -> TokenCreateForm:
        return TokenCreateForm(
            data,
            scopes=selectors.token_scopes_for(
                self.target, by_someone_else=self.target.pk != self.request.user.pk
            ),
        )

    def page(self, form: TokenCreateForm) -> HttpResponse:
        target = self.target
        events = audit_search(AuditFilter(object_type="user", object_id=str(target.pk)))[:10]
        return render(
            self.request,
            self.template_name,
            {
                "target": target,
                "tokens": selectors.token_list(user=target),
                "token_form": form,
                "has_second_factor": selectors.has_second_factor(target),
                "events": events,
                "next": reverse("user_detail", args=[target.pk]),
            },
        )


class UserEditView(TargetUserMixin, View):
    template_name = "accounts/user_edit.html"

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        return self.page(UserEditForm.for_user(self.target))

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        form = UserEditForm.for_user(self.target, request.POST)
        if form.is_valid():
            try:
                user = services.user_update(request=request, user=self.target, **form.cleaned_data)
            except ValidationError as error:
                apply_service_errors(form, error)
            else:
                messages.success(request, f"Saved {user.username}.")
                if user.pk == request.user.pk and user.role != Role.ADMIN:
                    return redirect("home")  # they just gave up managing users themselves
                return redirect("user_detail", pk=user.pk)
        return self.page(form)

    def page(self, form: UserEditForm) -> HttpResponse:
        return render(self.request, self.template_name, {"form": form, "target": self.target})


class UserActionView(TargetUserMixin, View):
    """Confirm (GET) and do (POST) one of: deactivate, reactivate, remove the second factor."""

    action = ""
    CONFIRM = {
        "deactivate": (
            "Deactivate {u}?",
            "{u} can no longer log in; their sessions end and their API tokens stop working. "
            "Nothing is deleted: the audit log keeps their name, and you can reactivate them.",
            "Deactivate",
        ),
        "reactivate": (
            "Reactivate {u}?",
            "{u} can log in again with their password, and their unrevoked tokens work again. "
            "They count towards the tenant's user quota.",
            "Reactivate",
        ),
        "remove_otp": (
            "Remove the authenticator of {u}?",
            "Do this when {u} lost their phone: they log in with their password alone until "
            "they set up a new authenticator (which this tenant may require of admins).",
            "Remove authenticator",
        ),
    }

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        title, message, button = (
            text.format(u=self.target.username) for text in self.CONFIRM[self.action]
        )
        return render(
            request,
            "accounts/confirm.html",
            {
                "title": title,
                "message": message,
                "button": button,
                "danger": self.action != "reactivate",
                "next": reverse("user_detail", args=[self.target.pk]),
            },
        )

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        target = self.target
        try:
            if self.action == "deactivate":
                services.user_deactivate(request=request, user=target)
                done = f"{target.username} is deactivated."
            elif self.action == "reactivate":
                services.user_reactivate(request=request, tenant=_tenant(request), user=target)
                done = f"{target.username} is active again."
            else:
                services.otp_remove(request=request, user=target)
                done = f"Removed the authenticator of {target.username}."
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
        else:
            messages.success(request, done)
            if target.pk == request.user.pk and self.action == "deactivate":
                return redirect("login")
        return self.back()


class UserPasswordResetView(TargetUserMixin, View):
    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        u = self.target.username
        return render(
            request,
            "accounts/confirm.html",
            {
                "title": f"Reset the password of {u}?",
                "message": f"The current password of {u} stops working at once and their "
                "sessions end. You get a one-time link to give them (it is also e-mailed to "
                f"{self.target.email or 'them — they have no e-mail address, so pass it on'}).",
                "button": "Reset password",
                "danger": True,
                "next": reverse("user_detail", args=[self.target.pk]),
            },
        )

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        try:
            link = services.user_password_reset(
                request=request, tenant=_tenant(request), user=self.target
            )
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
            return self.back()
        return _link_page(request, link, invited=False)


class TenantTokenListView(CapabilityRequiredMixin, ListView):
    """Every API token of the tenant, whoever owns it: what an admin reviews and revokes."""

    capability = Capability.USERS_MANAGE
    template_name = "accounts/user_token_list.html"
    context_object_name = "tokens"
    paginate_by = 50

    def get_queryset(self) -> QuerySet[ApiToken]:
        return selectors.token_list()


def locked_out(
    request: HttpRequest,
    original_response: HttpResponse | None = None,
    credentials: dict[str, Any] | None = None,
) -> HttpResponse:
    """What django-axes shows after too many failed logins: a clear page, status 429."""
    minutes = round(settings.AXES_COOLOFF_TIME * 60)
    username = (credentials or {}).get("username", "") or request.POST.get("username", "")
    services.lockout_record(request=request, username=str(username), cooloff_minutes=minutes)
    return render(request, "accounts/locked_out.html", {"minutes": minutes}, status=429)
