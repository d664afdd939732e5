"""The viewer's page and its per-tenant configuration; the files themselves are static.

The page is OHIF's `index.html` with this tenant's `app-config.js` and the shared files'
location (`STATIC_URL` + `viewer/`) written in. The configuration names this tenant's
`/dicom-web/` only, so a viewer opened on tenant B's site asks B's archive and nothing else:
the same session, role and audit rules as every DICOMweb request apply.
"""

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views import View

from accounts.permissions import Capability, CapabilityRequiredMixin
from configuration.ohif import ohif_config
from studies.viewer import bundle

# OHIF needs WebAssembly (image codecs), web workers from its own files, and style attributes
# (React sets them); it still runs no inline or evaluated script, and talks to this origin only.
VIEWER_POLICY: dict[str, Any] = {
    "DIRECTIVES": {
        **settings.CONTENT_SECURITY_POLICY["DIRECTIVES"],
        "script-src": ["'self'", "'wasm-unsafe-eval'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "worker-src": ["'self'", "blob:"],
        "font-src": ["'self'", "data:"],
    }
}


def viewer_root() -> Path | None:
    """The installed viewer's directory, or None when `make install` has not fetched it."""
    root = Path(settings.PORTAL_VIEWER_ROOT)
    return root if bundle.installed_version(root) == bundle.OHIF_VERSION else None


def assets_url() -> str:
    return f"{settings.STATIC_URL.rstrip('/')}/viewer/"


def app_config(request: HttpRequest) -> dict[str, Any]:
    """OHIF's `window.config` for the active tenant, as this request reaches its site."""
    base = reverse("viewer_page").rstrip("/")
    return {
        "routerBasename": base,
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "showStudyList": True,
        "maxNumberOfWebWorkers": 3,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 25},
        "showErrorDetails": "production",
        **ohif_config(request.tenant, request),  # type: ignore[attr-defined]
    }


class ViewerPageView(CapabilityRequiredMixin, View):
    """The viewer's single page, for every path below `/viewer/` (OHIF routes in the browser)."""

    capability = Capability.STUDIES_VIEW

    def get(self, request: HttpRequest, path: str = "") -> HttpResponse:
        root = viewer_root()
        if root is None:
            return render(
                request,
                "viewer/missing.html",
                {"version": bundle.OHIF_VERSION, "root": settings.PORTAL_VIEWER_ROOT},
                status=503,
            )
        html = bundle.index_html(root, config_url=reverse("viewer_config"), assets_url=assets_url())
        response = HttpResponse(html)
        response["Cache-Control"] = "no-store"
        response._csp_replace = VIEWER_POLICY["DIRECTIVES"]  # type: ignore[attr-defined]
        return response


class ViewerConfigView(CapabilityRequiredMixin, View):
    """`app-config.js`: where the files are, and this tenant's DICOMweb as the only source."""

    capability = Capability.STUDIES_VIEW

    def get(self, request: HttpRequest) -> HttpResponse:
        script = (
            f"window.PUBLIC_URL = {json.dumps(assets_url())};\n"
            "function browserImportFunction(moduleId) { return import(moduleId); }\n"
            f"window.config = {json.dumps(app_config(request), indent=1)};\n"
        )
        response = HttpResponse(script, content_type="text/javascript; charset=utf-8")
        response["Cache-Control"] = "no-store"
        return response
