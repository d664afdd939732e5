"""How a request finds its tenant, and the cookies that keep one tenant's login in that tenant.

Three selectors, per DESIGN.md "Tenant routing":
- `subdomain` mode: the Host header, matched against Domain rows (the base domain is public);
- `path` mode: `/t/<slug>/...` on the base domain, stripped into the script prefix;
- `X-Tenant: <slug>` (+ `X-Forwarded-Prefix`) from a trusted reverse proxy only.
Selectors that disagree are a 400, never a guess.
"""

import ipaddress
import logging
import re
from dataclasses import dataclass
from functools import cache

from django.conf import settings
from django.contrib.auth import logout
from django.contrib.sessions.middleware import SessionMiddleware
from django.core.exceptions import DisallowedHost
from django.core.handlers.wsgi import get_script_name
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect
from django.http.request import split_domain_port
from django.shortcuts import render
from django.urls import set_script_prefix, set_urlconf
from django.utils.deprecation import MiddlewareMixin

from portal.schemas import current_schema, tenant_connection
from tenants.models import Domain, Tenant, TenantStatus
from tenants.validators import SLUG_RE

logger = logging.getLogger(__name__)

PATH_PREFIX_RE = re.compile(r"^/t/(?P<slug>[^/]*)(?P<rest>/.*)?$", re.DOTALL)
FORWARDED_PREFIX_RE = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")
SESSION_SCHEMA_KEY = "_portal_schema"


class SelectionError(Exception):
    def __init__(self, status: int, reason: str, tenant: Tenant | None = None):
        super().__init__(reason)
        self.status, self.reason, self.tenant = status, reason, tenant


@dataclass(frozen=True)
class Selection:
    """What the request asked for: a tenant slug (None: the public site) and URL prefix."""

    slug: str | None
    prefix: str = ""
    path_info: str | None = None  # set when path mode stripped `/t/<slug>`
    host_tenant: Tenant | None = None


@cache
def _trusted_networks() -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(net, strict=False) for net in settings.PORTAL_TRUSTED_PROXIES)


def is_trusted_proxy(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in _trusted_networks())


def _host(request: HttpRequest) -> str:
    """The validated Host header without its port (Django checks it against ALLOWED_HOSTS)."""
    return split_domain_port(request.get_host())[0]


def select(request: HttpRequest) -> Selection:
    """Read the tenant selectors of a request; raise SelectionError on abuse or conflict."""
    try:
        host = _host(request)
    except DisallowedHost:
        raise SelectionError(400, "This host name is not served here.") from None

    header_slug: str | None = None
    prefix = ""
    if "HTTP_X_TENANT" in request.META or "HTTP_X_FORWARDED_PREFIX" in request.META:
        remote = request.META.get("REMOTE_ADDR", "")
        if is_trusted_proxy(remote):
            header_slug = request.META.get("HTTP_X_TENANT")
            forwarded = request.META.get("HTTP_X_FORWARDED_PREFIX", "").rstrip("/")
            if forwarded:
                if not FORWARDED_PREFIX_RE.match(forwarded) or "/../" in forwarded + "/":
                    raise SelectionError(400, "The proxy sent an invalid X-Forwarded-Prefix.")
                prefix = forwarded
            if header_slug is not None and not SLUG_RE.match(header_slug):
                raise SelectionError(404, "No tenant has this name.")
        else:
            logger.warning("ignoring X-Tenant/X-Forwarded-Prefix from untrusted %s", remote)

    host_tenant: Tenant | None = None
    path_slug: str | None = None
    path_info: str | None = None
    if settings.PORTAL_TENANT_ROUTING == "subdomain":
        if host != settings.PORTAL_BASE_DOMAIN:
            domain = Domain.objects.select_related("tenant").filter(domain=host).first()
            if domain is None:
                raise SelectionError(404, "No tenant is served at this address.")
            host_tenant = domain.tenant
    else:
        match = PATH_PREFIX_RE.match(request.path_info)
        if match:
            path_slug = match["slug"]
            if not SLUG_RE.match(path_slug):
                raise SelectionError(404, "No tenant has this name.")
            path_info = match["rest"] or ""

    selectors = {
        s
        for s in (header_slug, path_slug, host_tenant.slug if host_tenant else None)
        if s is not None
    }
    if len(selectors) > 1:
        raise SelectionError(400, "The request names more than one tenant.")
    slug = selectors.pop() if selectors else None
    if path_slug is not None:
        prefix = f"{prefix}/t/{path_slug}"
    return Selection(slug=slug, prefix=prefix, path_info=path_info, host_tenant=host_tenant)


def _usable_tenant(selection: Selection) -> Tenant | SelectionError:
    """The tenant a selection names, or why it cannot be served."""
    if selection.slug is None:
        return Tenant.objects.get(schema_name="public")
    tenant = selection.host_tenant or Tenant.objects.filter(slug=selection.slug).first()
    if tenant is None or tenant.status == TenantStatus.DELETED:
        return SelectionError(404, "No tenant is served at this address.")
    if tenant.status == TenantStatus.SUSPENDED:
        return SelectionError(403, "This tenant is suspended.", tenant)
    if tenant.status != TenantStatus.ACTIVE:
        return SelectionError(503, "This tenant is being set up; try again soon.", tenant)
    from tenants.figures import schema_behind

    if schema_behind(tenant):
        return SelectionError(
            503, "This archive is being upgraded; it is back in a minute or two.", tenant
        )
    return tenant


def _error_page(
    request: HttpRequest, status: int, reason: str, *, tenant: Tenant | None = None
) -> HttpResponse:
    template = {
        403: "errors/tenant_suspended.html",
        404: "errors/tenant_not_found.html",
        400: "errors/bad_request.html",
        503: "errors/tenant_unavailable.html",
    }[status]
    response = render(
        request, template, {"reason": reason, "blocked_tenant": tenant}, status=status
    )
    if status == 503:
        response["Retry-After"] = "30"
    return response


def _forget_untrusted_scheme(request: HttpRequest) -> None:
    """Django believes SECURE_PROXY_SSL_HEADER from any peer; only a trusted proxy may say
    the client used https (it decides secure cookies, redirects and CSRF's origin check)."""
    header = settings.SECURE_PROXY_SSL_HEADER
    if header and header[0] in request.META:
        remote = request.META.get("REMOTE_ADDR", "")
        if not is_trusted_proxy(remote):
            del request.META[header[0]]
            logger.warning("ignoring %s from untrusted %s", header[0], remote)


class TenantRoutingMiddleware(MiddlewareMixin):
    """Activates the selected tenant's schema, URLconf and script prefix for this request."""

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        _forget_untrusted_scheme(request)
        tenant_connection().set_schema_to_public()
        # The prefix is thread-local: start from this request's own, never the last one's.
        set_script_prefix(get_script_name(request.META) + "/")
        set_urlconf(settings.PUBLIC_SCHEMA_URLCONF)
        request.urlconf = settings.PUBLIC_SCHEMA_URLCONF  # type: ignore[attr-defined]
        try:
            selection = select(request)
        except SelectionError as error:
            logger.info(
                "tenant selection refused (%s): %s %s",
                error.status,
                request.META.get("HTTP_HOST"),
                request.path,
            )
            return _error_page(request, error.status, error.reason)

        if selection.path_info == "":
            return HttpResponsePermanentRedirect(request.path + "/")

        tenant = _usable_tenant(selection)
        if isinstance(tenant, SelectionError):
            blocked = tenant.tenant
            return _error_page(request, tenant.status, tenant.reason, tenant=blocked)

        if selection.prefix:
            request.META["SCRIPT_NAME"] = selection.prefix
            set_script_prefix(selection.prefix + "/")
            if selection.path_info is not None:
                request.path_info = selection.path_info
            request.path = selection.prefix + request.path_info
        tenant.domain_url = _host(request)
        request.tenant = tenant  # type: ignore[attr-defined]
        tenant_connection().set_tenant(tenant)
        if not tenant.is_public:
            request.urlconf = settings.ROOT_URLCONF  # type: ignore[attr-defined]
            set_urlconf(settings.ROOT_URLCONF)
        return None


def session_cookie_name(request: HttpRequest) -> str:
    tenant = getattr(request, "tenant", None)
    if tenant is None or tenant.is_public:
        return settings.SESSION_COOKIE_NAME
    return f"{settings.SESSION_COOKIE_NAME}_{tenant.slug}"


class TenantSessionMiddleware(SessionMiddleware):
    """Django's session middleware with a cookie named and pathed per tenant.

    Sessions are also stored in each tenant's own `django_session` table, so a cookie that
    reaches the wrong tenant finds no session there.
    """

    def process_request(self, request: HttpRequest) -> None:
        request.session = self.SessionStore(request.COOKIES.get(session_cookie_name(request)))

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        name = session_cookie_name(request)
        generic = settings.SESSION_COOKIE_NAME
        if name == generic:
            return super().process_response(request, response)
        # Django's logic decides whether to save, set or delete the cookie; it looks for the
        # generic name, so show it the tenant's cookie under that name, then rename the result.
        cookies = request.COOKIES
        request.COOKIES = {k: v for k, v in cookies.items() if k != generic}
        if name in cookies:
            request.COOKIES[generic] = cookies[name]
        try:
            response = super().process_response(request, response)
        finally:
            request.COOKIES = cookies
        morsel = response.cookies.pop(generic, None)
        if morsel is not None:
            response.cookies[name] = morsel.value
            for key, value in morsel.items():
                if value:
                    response.cookies[name][key] = value
            response.cookies[name]["path"] = request.META.get("SCRIPT_NAME", "") + "/"
        return response


class SessionTenantGuardMiddleware(MiddlewareMixin):
    """Logs out a session that was opened in another schema (defence in depth)."""

    def process_request(self, request: HttpRequest) -> None:
        if not request.user.is_authenticated:
            return
        if request.session.get(SESSION_SCHEMA_KEY) != current_schema():
            logger.warning(
                "session of schema %s presented to %s; logged out",
                request.session.get(SESSION_SCHEMA_KEY),
                current_schema(),
            )
            logout(request)


def bind_session_to_schema(request: HttpRequest) -> None:
    """Called at login: the session is valid only in the schema that authenticated it."""
    request.session[SESSION_SCHEMA_KEY] = current_schema()


def client_address(request: HttpRequest) -> str:
    """The caller's address: REMOTE_ADDR, or the nearest untrusted hop of X-Forwarded-For
    when the request came through one of PORTAL_TRUSTED_PROXIES (for audit and lockouts)."""
    remote = str(request.META.get("REMOTE_ADDR", ""))
    if not is_trusted_proxy(remote):
        return remote
    hops = [h.strip() for h in str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",")]
    for hop in reversed([h for h in hops if h]):
        if not is_trusted_proxy(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                break
    return remote
