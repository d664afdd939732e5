"""The OpenAPI schemas of the platform and of tenant sites validate and list every endpoint."""

import pytest
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver


def api_paths(urlconf: str) -> set[str]:
    """Every /api/v1/ route of a URLconf, in OpenAPI's `{param}` spelling."""
    found: set[str] = set()

    def walk(patterns, prefix: str) -> None:  # type: ignore[no-untyped-def]
        for pattern in patterns:
            route = prefix + str(pattern.pattern).lstrip("^").rstrip("$")
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern) and route.startswith("api/v1/"):
                found.add(route)

    walk(get_resolver(urlconf).url_patterns, "")
    return found


@pytest.mark.parametrize("urlconf", ["portal.urls_public", "portal.urls_tenants"])
def test_schema_validates_without_warnings(db, urlconf, tmp_path):
    out = tmp_path / "schema.yaml"
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--urlconf", urlconf, "--file", str(out)
    )
    schema = out.read_text()
    assert "openapi: 3" in schema
    routes = api_paths(urlconf)
    assert routes, "no API routes found"
    for route in routes:
        # `^api/v1/tenants/(?P<slug>[^/.]+)/$` -> `/api/v1/tenants/` is enough to find it.
        stem = "/" + route.lstrip("^").split("(?P", 1)[0].split("<", 1)[0].rstrip("$")
        assert stem in schema, f"{stem} missing from the {urlconf} schema"
