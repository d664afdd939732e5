"""What every DICOMweb request goes through: who is asking, may they, and the audit row.

A request authenticates with the tenant site's session (same origin; unsafe methods then
need the CSRF token, as every form does) or with an API token (`Authorization: Bearer
pp_…`) of the active tenant's schema, so a token of another tenant is unknown here. The
role and the token's scope must grant the view's capability. Errors are answered with the
status PS3.18 names and a sentence saying why; each request that reaches patient data
leaves exactly one audit row, however many instances it touches.
"""

import json
import logging
import re
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions

from accounts.authentication import ApiTokenAuthentication
from accounts.models import ApiToken
from accounts.permissions import Capability, has_capability, token_allows
from audit.services import audit_record
from studies.dicom import is_valid_uid
from studies.dicomweb.negotiation import accepted

logger = logging.getLogger(__name__)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
RETRIEVE_URL = "00081190"
JSON_RESPONSE_TYPES = frozenset({DICOM_JSON, "application/json", "application/*", "*/*"})


class DicomWebError(Exception):
    """A request answered with an HTTP error status and the reason, for the client."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def error_response(status: int, reason: str, **headers: str) -> HttpResponse:
    response = HttpResponse(
        json.dumps({"status": status, "detail": reason}),
        status=status,
        content_type="application/json",
    )
    # PS3.18 8.7.4: the reason also travels as a warning, for clients that drop bodies.
    response["Warning"] = warning(reason)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def printable(text: str, limit: int = 80) -> str:
    """Client-sent text fit to quote in a reason: ASCII, no control characters, bounded."""
    ascii_text = text[:limit].encode("ascii", "backslashreplace").decode()
    return _CONTROL.sub("?", ascii_text)


def warning(text: str) -> str:
    """A `Warning: 299` header value (RFC 7234 form, as PS3.18 uses it).

    Header values must be printable ASCII (gunicorn turns anything else into a 500), and
    reasons may quote what a client sent, so they are cleaned here, once for every view."""
    quoted = printable(text.replace("\\", "/").replace('"', "'"), limit=500)
    return f'299 portal "{quoted}"'


def accepts_dicom_json(request: HttpRequest) -> bool:
    """Whether the client accepts DICOM JSON (header or `accept` parameter)."""
    return any(r.anything or r.media_type in JSON_RESPONSE_TYPES for r in accepted(request))


def checked_uid(value: str, what: str) -> str:
    """A UID from the path, or a 400 saying it is malformed (never a path part unchecked)."""
    if not is_valid_uid(value):
        raise DicomWebError(400, f"The {what} {value[:80]!r} is not a valid UID.")
    return value


class _Csrf(CsrfViewMiddleware):
    def _reject(self, request: HttpRequest, reason: str) -> HttpResponse:
        return error_response(403, f"CSRF check failed: {reason}")


def _csrf_failure(request: HttpRequest) -> HttpResponse | None:
    check = _Csrf(lambda r: HttpResponse())
    check.process_request(request)
    return check.process_view(request, lambda r: HttpResponse(), (), {})


@method_decorator(csrf_exempt, name="dispatch")
class DicomWebView(View):
    """Base of every DICOMweb endpoint: authentication, capability, errors, one audit row.

    Subclasses set `dicomweb_capability` and implement `get`/`post`; they call
    `self.audit(...)` once they know what the request touches.
    """

    dicomweb_capability: Capability = Capability.STUDIES_VIEW
    user: Any = None
    token: ApiToken | None = None

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        self.audited = False
        try:
            denied = self.authorize(request)
            if denied is not None:
                return denied
            return super().dispatch(request, *args, **kwargs)
        except DicomWebError as error:
            if self.user is not None and not self.audited:
                # Refused after authentication (a guessed UID, a 406 that still confirms a
                # study exists): no data went out, but the attempt is on record.
                status = error.status
                self.audit(outcome="failure", details={"status": status, "reason": error.reason})
            return error_response(error.status, error.reason)

    def authorize(self, request: HttpRequest) -> HttpResponse | None:
        try:
            found = ApiTokenAuthentication().authenticate(request)
        except exceptions.AuthenticationFailed as failure:
            return error_response(401, str(failure.detail), WWW_Authenticate='Bearer realm="api"')
        except exceptions.PermissionDenied as refusal:  # an admin's token waiting for 2FA
            return error_response(403, str(refusal.detail))
        if found is not None:
            self.user, self.token = found
        elif request.user.is_authenticated:
            self.user = request.user
            if request.method not in {"GET", "HEAD", "OPTIONS"}:
                refused = _csrf_failure(request)
                if refused is not None:
                    return refused
        else:
            return error_response(
                401,
                "Log in, or send an API token (Authorization: Bearer pp_...).",
                WWW_Authenticate='Bearer realm="api"',
            )
        capability = self.dicomweb_capability
        method = request.method or "GET"
        if not has_capability(self.user, capability) or not token_allows(
            self.token, capability, method
        ):
            return error_response(403, "Your role or token scope does not allow this.")
        return None

    def http_method_not_allowed(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        allowed = ", ".join(m.upper() for m in self._allowed_methods())  # type: ignore[attr-defined]
        return error_response(405, f"{request.method} is not supported here.", Allow=allowed)

    def audit(
        self,
        *,
        action: str = "",
        object_type: str = "",
        object_id: str = "",
        outcome: str = "success",
        details: dict[str, Any] | None = None,
    ) -> None:
        """The one audit row of this request."""
        if self.audited:
            return
        self.audited = True
        request = self.request
        audit_record(
            action=action or getattr(self, "audit_action", "dicomweb.access"),
            request=request,
            actor=self.user,
            object_type=object_type,
            object_id=object_id,
            outcome=outcome,
            details={
                "method": request.method,
                "path": request.path[:500],
                "query": request.META.get("QUERY_STRING", "")[:1000],
                "token": self.token.key_id if self.token else None,
                **(details or {}),
            },
        )


def by_method(**views: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """One URL, a view per method (`studies`: GET searches, POST stores)."""
    allowed = ", ".join(sorted(m.upper() for m in views))

    @csrf_exempt
    def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        method = (request.method or "GET").lower()
        handler = views.get("get" if method == "head" else method)
        if handler is None:
            return error_response(405, f"{request.method} is not supported here.", Allow=allowed)
        return handler(request, *args, **kwargs)

    return view
