"""Every capability-guarded page and API list of a tenant site x every role, anonymous, and a
token of another tenant: allowed exactly as accounts/permissions.py's table says.

The cases are collected from the URLconf, so a new page with a `capability` is covered
without writing a test for it.
"""

import pytest
from django.urls import URLResolver, get_resolver
from django_tenants.utils import schema_context

from accounts.models import Role
from accounts.permissions import ROLE_CAPABILITIES, Capability
from accounts.services import api_token_create
from tests.conftest import logged_in, tenant_client


def guarded_routes() -> list[tuple[str, Capability, bool]]:
    """(path, capability for GET, is_api) of every argument-free route with a capability."""
    routes = []

    def walk(patterns, prefix: str) -> None:  # type: ignore[no-untyped-def]
        for pattern in patterns:
            route = prefix + str(pattern.pattern).lstrip("^").rstrip("$")
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
                continue
            if "<" in route or "(?P" in route or "\\." in route:
                continue  # needs an object; those are tested per section
            view = getattr(pattern.callback, "view_class", None) or getattr(
                pattern.callback, "cls", None
            )
            capability = getattr(view, "capability", None)
            actions = getattr(pattern.callback, "actions", None) or {}
            if view is not None and not actions and not hasattr(view, "get"):
                continue  # POST only (a bulk action): its own tests check the roles

            if capability is None or (actions and actions.get("get") != "list"):
                continue
            if actions:
                capability = getattr(view, "capabilities", {}).get("list", capability)
            path = "/" + route.lstrip("^").rstrip("$")
            routes.append((path, Capability(capability), path.startswith("/api/")))

    walk(get_resolver("portal.urls_tenants").url_patterns, "")
    return sorted(set(routes))


ROUTES = guarded_routes()


def test_the_matrix_covers_every_section():
    paths = {path for path, _, _ in ROUTES}
    assert {"/users/", "/storage/", "/settings/", "/audit/", "/api/v1/audit/"} <= paths


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize(("path", "capability", "is_api"), ROUTES)
def test_role_may_open_exactly_what_its_capabilities_allow(
    alpha, make_user, role, path, capability, is_api
):
    user = make_user(alpha, role=role)
    allowed = capability in ROLE_CAPABILITIES[role]
    if is_api:
        with schema_context(alpha.schema_name):
            _, raw = api_token_create(user=user, name="matrix")
        status = tenant_client(alpha, HTTP_AUTHORIZATION=f"Bearer {raw}").get(path).status_code
    else:
        status = logged_in(tenant_client(alpha), user.username).get(path).status_code
    assert status == (200 if allowed else 403), f"{role} {path}"


@pytest.mark.parametrize(("path", "capability", "is_api"), ROUTES)
def test_anonymous_and_other_tenants_are_refused(alpha, beta, make_user, path, capability, is_api):
    anonymous = tenant_client(alpha).get(path)
    assert anonymous.status_code == (401 if is_api else 302)
    intruder = make_user(beta, role=Role.ADMIN)
    if is_api:
        with schema_context(beta.schema_name):
            _, raw = api_token_create(user=intruder, name="intruder")
        status = tenant_client(alpha, HTTP_AUTHORIZATION=f"Bearer {raw}").get(path).status_code
        assert status == 401
    else:
        client = logged_in(tenant_client(beta), intruder.username)
        client.cookies["portal_session_alpha"] = client.cookies["portal_session_beta"].value
        response = client.get(path, HTTP_HOST="alpha.localhost")
        assert response.status_code == 302 and "/account/login/" in response["Location"]
