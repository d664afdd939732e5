"""Where “Open in viewer” goes: the built-in viewer, or the tenant's own viewer URL."""

from urllib.parse import quote, urlencode

from django.urls import reverse

from configuration.selectors import tenant_settings


def viewer_url(study_uid: str, series_uid: str = "", *, template: str | None = None) -> str:
    """The launch URL for a study (and a series of it, shown first)."""
    if template is None:
        template = tenant_settings().viewer_url_template
    if template:
        return template.format(study_uid=quote(study_uid), series_uid=quote(series_uid))
    query = {"StudyInstanceUIDs": study_uid}
    if series_uid:
        query["initialSeriesInstanceUID"] = series_uid
    return f"{reverse('viewer_route', args=['viewer'])}?{urlencode(query)}"
