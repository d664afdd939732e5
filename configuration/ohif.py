"""The OHIF Viewer (v3) data source for this tenant's DICOMweb service, ready to paste.

It holds only the tenant's public URLs, never a credential: the viewer sends its own API
token (or a proxy adds one), so nothing secret is written into a file people copy around.
"""

import json
from typing import Any

from django.http import HttpRequest
from django.urls import reverse

from tenants.links import tenant_url
from tenants.models import Tenant

DATA_SOURCE_NAME = "dicomweb"
DICOMWEB_NAMESPACE = "@ohif/extension-default.dataSourcesModule.dicomweb"


def dicomweb_roots(tenant: Tenant, request: HttpRequest | None = None) -> tuple[str, str]:
    """(DICOMweb root, WADO-URI endpoint) as the tenant's users reach them.

    With a request, its own host, scheme and script prefix (path mode's `/t/<slug>`, a
    proxy's X-Forwarded-Prefix) are kept; without one, the configured tenant links are used.
    """
    studies = reverse("dicomweb_studies")
    wado_uri = reverse("dicomweb_wado_uri")
    if request is not None:
        root = request.build_absolute_uri(studies).removesuffix("studies").rstrip("/")
        return root, request.build_absolute_uri(wado_uri)
    prefix = reverse("home").rstrip("/")
    root = tenant_url(tenant, studies.removeprefix(prefix)).removesuffix("studies").rstrip("/")
    return root, tenant_url(tenant, wado_uri.removeprefix(prefix))


def ohif_config(tenant: Tenant, request: HttpRequest | None = None) -> dict[str, Any]:
    """The `dataSources` part of OHIF's app config, pointing at this tenant only."""
    root, wado_uri = dicomweb_roots(tenant, request)
    return {
        "dataSources": [
            {
                "namespace": DICOMWEB_NAMESPACE,
                "sourceName": DATA_SOURCE_NAME,
                "configuration": {
                    "friendlyName": tenant.name,
                    "name": tenant.slug,
                    "wadoUriRoot": wado_uri,
                    "qidoRoot": root,
                    "wadoRoot": root,
                    "qidoSupportsIncludeField": True,
                    "supportsReject": False,
                    "imageRendering": "wadors",
                    "thumbnailRendering": "wadors",
                    "enableStudyLazyLoad": True,
                    "supportsFuzzyMatching": False,
                    "supportsWildcard": True,
                    "staticWado": False,
                    "singlepart": "bulkdata,video",
                    "bulkDataURI": {"enabled": True},
                    "omitQuotationForMultipartRequest": True,
                },
            }
        ],
        "defaultDataSourceName": DATA_SOURCE_NAME,
    }


def ohif_config_json(tenant: Tenant, request: HttpRequest | None = None) -> str:
    return json.dumps(ohif_config(tenant, request), indent=2)
