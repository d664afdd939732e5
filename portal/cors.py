"""CORS for DICOMweb: a browser viewer may read `/dicom-web/` if its origin is the tenant's.

django-cors-headers adds the headers; `CORS_ALLOWED_ORIGINS` stays empty and its
`check_request_enabled` signal asks `tenant_allows_origin` instead, which answers from the
active tenant's `TenantSettings.cors_origins` only. The middleware must run after
`portal.routing.TenantRoutingMiddleware`: by then the tenant is chosen and `path_info` no
longer carries the `/t/<slug>` of path mode, so one `CORS_URLS_REGEX` fits every mode.
"""

import re
from typing import Any
from urllib.parse import urlsplit

from corsheaders.conf import conf
from corsheaders.middleware import CorsMiddleware
from corsheaders.signals import check_request_enabled
from django.dispatch import receiver
from django.http import HttpRequest

from configuration.models import SINGLETON_ID, TenantSettings

_DEFAULT_PORTS = {"http": 80, "https": 443}
_ORIGINS_ATTR = "_portal_cors_origins"


class TenantCorsMiddleware(CorsMiddleware):
    """django-cors-headers' middleware; loading it from here connects the tenant check."""


def normalised_origin(origin: str) -> str:
    """An origin as a browser serialises it: lowercase, without the scheme's default port."""
    try:
        parts = urlsplit(origin.strip().lower())
        port = parts.port
    except ValueError:
        return ""
    if not parts.scheme or not parts.hostname:
        return ""
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is not None and port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{port}"
    return f"{parts.scheme}://{host}"


def _tenant_origins(request: HttpRequest) -> frozenset[str]:
    """The active tenant's origins, read once per request (the signal may ask twice)."""
    cached: frozenset[str] | None = getattr(request, _ORIGINS_ATTR, None)
    if cached is None:
        # Without creating the settings row: a tenant that never saved one allows nobody.
        stored = (
            TenantSettings.objects.filter(pk=SINGLETON_ID)
            .values_list("cors_origins", flat=True)
            .first()
        )
        listed = stored if isinstance(stored, list) else []
        cached = frozenset(filter(None, (normalised_origin(str(o)) for o in listed)))
        setattr(request, _ORIGINS_ATTR, cached)
    return cached


def tenant_allows_origin(request: HttpRequest) -> bool:
    """Whether this request is a DICOMweb one whose Origin the active tenant lists."""
    tenant = getattr(request, "tenant", None)
    if tenant is None or tenant.is_public:
        return False
    if not re.match(conf.CORS_URLS_REGEX, request.path_info):
        return False
    origin = request.headers.get("origin", "")
    # "null" (sandboxed frames, file: pages) is never an origin a tenant can list.
    if not origin or origin == "null":
        return False
    return normalised_origin(origin) in _tenant_origins(request)


@receiver(check_request_enabled, dispatch_uid="portal.cors.tenant_allows_origin")
def _check_request_enabled(sender: Any, request: HttpRequest, **kwargs: Any) -> bool:
    return tenant_allows_origin(request)
