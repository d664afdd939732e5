"""What each role may do, in one table, and the view and API guards that read it.

Token scopes narrow a user's role further: a `read` token only reads, a `store` token only
sends images (ingest), a `full` token acts with the user's whole role.
"""

from enum import StrEnum
from typing import Any

from django.contrib.auth.mixins import AccessMixin
from django.http import HttpRequest, HttpResponseBase
from django.shortcuts import render
from rest_framework import permissions

from accounts.models import ApiToken, Role, TokenScope


class Capability(StrEnum):
    DASHBOARD_VIEW = "dashboard.view"
    USERS_MANAGE = "users.manage"
    TOKENS_OWN = "tokens.own"
    STORAGE_VIEW = "storage.view"
    STORAGE_MANAGE = "storage.manage"
    SETTINGS_VIEW = "settings.view"
    SETTINGS_MANAGE = "settings.manage"
    AUDIT_VIEW = "audit.view"
    STUDIES_VIEW = "studies.view"
    STUDIES_MANAGE = "studies.manage"
    INGEST_STORE = "ingest.store"
    JOBS_VIEW = "jobs.view"
    JOBS_MANAGE = "jobs.manage"
    # Absolute server paths, probe messages and job tracebacks: what the people who run the
    # machine need, and what tells everyone else how the server is laid out.
    SERVER_DETAILS = "server.details"


C = Capability
ROLE_CAPABILITIES: dict[str, frozenset[Capability]] = {
    Role.ADMIN: frozenset(Capability),
    Role.OPERATOR: frozenset(
        {
            C.DASHBOARD_VIEW,
            C.TOKENS_OWN,
            C.STORAGE_VIEW,
            C.STUDIES_VIEW,
            C.STUDIES_MANAGE,
            C.INGEST_STORE,
            C.JOBS_VIEW,
            C.JOBS_MANAGE,
        }
    ),
    Role.VIEWER: frozenset({C.DASHBOARD_VIEW, C.TOKENS_OWN, C.STUDIES_VIEW}),
    Role.AUDITOR: frozenset({C.DASHBOARD_VIEW, C.TOKENS_OWN, C.AUDIT_VIEW}),
}
# Capabilities that only read; a `read` token is limited to these (and to safe methods).
READ_CAPABILITIES = frozenset(
    {
        C.DASHBOARD_VIEW,
        C.STORAGE_VIEW,
        C.SETTINGS_VIEW,
        C.AUDIT_VIEW,
        C.STUDIES_VIEW,
        C.JOBS_VIEW,
        C.SERVER_DETAILS,
    }
)


def has_capability(user: Any, capability: Capability) -> bool:
    """Whether an authenticated, active tenant user's role grants `capability`."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    return capability in ROLE_CAPABILITIES.get(getattr(user, "role", ""), frozenset())


def token_allows(token: ApiToken | None, capability: Capability, method: str) -> bool:
    """Whether a request made with `token` (None: a session) may use `capability`."""
    if token is None or token.scope == TokenScope.FULL:
        return True
    if token.scope == TokenScope.READ:
        return capability in READ_CAPABILITIES and method in permissions.SAFE_METHODS
    return capability == C.INGEST_STORE  # TokenScope.STORE


def request_token(request: Any) -> ApiToken | None:
    """The API token a (DRF) request authenticated with; None for a session."""
    auth = getattr(request, "auth", None)
    return auth if isinstance(auth, ApiToken) else None


def request_allows(request: Any, capability: Capability) -> bool:
    """Whether the request's user and its token (if any) may use `capability`: for views and
    serializers that show more to some callers rather than refusing the others."""
    return has_capability(request.user, capability) and token_allows(
        request_token(request), capability, request.method or "GET"
    )


class CapabilityRequiredMixin(AccessMixin):
    """Views declare `capability`; anonymous users go to the login page, others get a 403."""

    capability: Capability

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        if not has_capability(request.user, self.capability):
            return render(request, "errors/forbidden.html", status=403)
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]


class HasCapability(permissions.BasePermission):
    """DRF guard: the view's `capability` (or `capabilities[action]`), role and token scope."""

    message = "Your role or token scope does not allow this."

    def has_permission(self, request: Any, view: Any) -> bool:
        return request_allows(request, self.capability_for(view, request.method))

    @staticmethod
    def capability_for(view: Any, method: str) -> Capability:
        by_action = getattr(view, "capabilities", None)
        action = getattr(view, "action", None)
        if by_action and action in by_action:
            return Capability(by_action[action])
        if method not in permissions.SAFE_METHODS and hasattr(view, "write_capability"):
            return Capability(view.write_capability)
        return Capability(view.capability)
