"""Every form and every API operation, filled with what an attacker or a broken client sends:
huge and negative numbers, NUL bytes, 10 kB strings, the wrong JSON types. None may answer 500.

The forms are found by opening every page of the tenant site and of the super-admin site and
reading their HTML; the API operations come from the OpenAPI schema. A new form or endpoint is
walked without a test written for it.
"""

from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django_tenants.utils import schema_context
from pydicom.uid import generate_uid

from accounts.models import Role
from accounts.services import api_token_create
from configuration.models import TenantSettings
from studies.models import StorageMedium
from tests.configuration.conftest import add_node, add_rule
from tests.conftest import logged_in, tenant_client
from tests.studies.conftest import storage  # noqa: F401  (the fixture: files cleaned up)
from tests.studies.index.test_study_pages import dicom, store

HOSTILE_TEXT = [
    "9" * 40,
    "-" + "9" * 40,
    "-1",
    "0",
    "1e309",
    "NaN",
    "\x00",
    "a\x00b",
    "x" * 10_000,
    "\u202e\ufeff" * 50,
    "../../../../etc/passwd",
    "2026-02-31",
    "",
]
HOSTILE_JSON: list[Any] = [
    *HOSTILE_TEXT,
    10**40,
    -(10**40),
    -1,
    1.5,
    True,
    None,
    [],
    ["x"] * 3,
    {"$gt": ""},
]
# Pages whose forms end the walker's session or need a secret it does not hold.
SKIPPED_PAGES = {"login", "login_verify", "logout", "set_password"}


class Forms(HTMLParser):
    """The forms of a page: method, action and {field name: the value the page holds}."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        name = values.get("name") or ""
        if tag == "form":
            method = (values.get("method") or "get").lower()
            self.forms.append({"method": method, "action": values.get("action"), "fields": {}})
        elif not self.forms:
            return
        elif tag == "option" and self._select is not None:
            fields = self.forms[-1]["fields"]
            if fields.get(self._select) is None or "selected" in values:
                fields[self._select] = values.get("value") or ""
        elif tag == "select" and name:
            self._select = name
            self.forms[-1]["fields"][name] = None
        elif tag in ("input", "textarea") and name and name != "csrfmiddlewaretoken":
            if values.get("type") in ("checkbox", "radio"):
                if "checked" in values:
                    self.forms[-1]["fields"][name] = values.get("value") or "on"
                else:
                    self.forms[-1]["fields"].setdefault(name, "")
            else:
                self.forms[-1]["fields"][name] = values.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None


def page_paths(urlconf: str, objects: dict[str, str]) -> list[tuple[str, str]]:
    """(name, path) of every HTML page, its parameters filled from `objects`."""
    found: list[tuple[str, str]] = []

    def walk(patterns: list[Any], prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
                continue
            assert isinstance(pattern, URLPattern)
            # The viewer's pages are OHIF's (no portal form): tests/studies/viewer covers them.
            skipped = route.startswith(("api/", "dicom-web/", "viewer/"))
            if skipped or pattern.name in SKIPPED_PAGES:
                continue
            path = "/" + route
            for parameter, value in objects.items():
                path = path.replace(parameter, value)
            assert "<" not in path, f"no object for {route}: add one to the walker's fixture"
            found.append((pattern.name or route, path))

    walk(get_resolver(urlconf).url_patterns, "")
    return found


def forms_of(client: Client, path: str) -> Iterator[tuple[str, str, dict[str, str]]]:
    """(method, absolute action, {field: value as the page holds it}) of each form at `path`."""
    response = client.get(path)
    assert response.status_code < 500, f"GET {path}: {response.status_code}"
    if response.status_code != 200 or "html" not in response.get("Content-Type", ""):
        return
    parser = Forms()
    parser.feed(response.content.decode())
    for form in parser.forms:
        action = urlsplit(urljoin(path, form["action"] or path)).path
        if action.rstrip("/").endswith(("logout", "login")):
            continue
        yield form["method"], action, {k: v or "" for k, v in form["fields"].items()}


def answer(request: str, send: Any, *args: Any, **kwargs: Any) -> Any:
    """The response, or a failure that names the request when the view raised instead."""
    try:
        return send(*args, **kwargs)
    except Exception as error:
        raise AssertionError(f"{request} raised {error!r}") from error


def walk_forms(
    client: Client,
    pages: list[tuple[str, str]],
    still_in: str,
    undo: Callable[[], None] = lambda: None,
) -> int:
    """Submit every form of every page with one field at a time made hostile, the others as
    the page holds them (so the hostile value gets past the other fields' checks), then with
    every field hostile at once. Returns the number of requests made."""
    sent = 0
    for _name, path in pages:
        for method, action, baseline in list(forms_of(client, path)):
            send = client.post if method == "post" else client.get
            variants = [{**baseline, field: value} for field in baseline for value in HOSTILE_TEXT]
            variants += [dict.fromkeys(baseline, value) for value in HOSTILE_TEXT]
            for data in variants:
                hostile = {k: v[:40] for k, v in data.items() if v != baseline.get(k)}
                request = f"{method.upper()} {action} {hostile!r}"
                response = answer(request, send, action, data)
                sent += 1
                assert response.status_code < 500, f"{request}: {response.status_code}"
        # A walk that lost its session proves nothing about the pages after it. `undo` takes
        # back what a hostile value legitimately switched on (a 2FA requirement, say).
        undo()
        assert client.get(still_in).status_code == 200, f"logged out after {path}"
    return sent


def schema_operations(client: Client) -> list[tuple[str, str, dict[str, Any], list[str]]]:
    """(method, path template, request body properties, query parameter names) from OpenAPI."""
    schema = client.get("/api/schema/", {"format": "json"}).json()
    components = schema.get("components", {}).get("schemas", {})

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = components[node["$ref"].rsplit("/", 1)[1]]
        return node

    operations = []
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            if method not in ("get", "post", "put", "patch"):
                continue
            body: dict[str, Any] = {}
            for content in operation.get("requestBody", {}).get("content", {}).values():
                body.update(resolve(content.get("schema", {})).get("properties", {}))
            query = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
            operations.append((method, path, body, query))
    return operations


def api_baseline(client: Client, path: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Valid values for a body: the object at `path`, or the first of its list (or its
    parent's list), as the API shows it; only the fields the body takes."""
    for candidate in (path, path.rstrip("/").rsplit("/", 1)[0] + "/"):
        response = client.get(candidate)
        if response.status_code != 200 or "json" not in response.get("Content-Type", ""):
            continue
        shown = response.json()
        if isinstance(shown, dict) and isinstance(shown.get("results"), list):
            shown = shown["results"][0] if shown["results"] else {}
        if isinstance(shown, dict) and set(shown) & set(fields):
            return {k: v for k, v in shown.items() if k in fields and v is not None}
    return {}


def walk_api(client: Client, objects: dict[str, str]) -> int:
    """Every operation of the schema, one body field at a time made hostile (the others valid),
    every field at once, and bodies that are not the JSON asked for; queries likewise."""
    sent = 0
    for method, template, body, query in schema_operations(client):
        path = template
        for parameter, value in objects.items():
            path = path.replace(parameter, value)
        assert "{" not in path, f"no object for {template}: add one to the walker's fixture"
        variants: list[Any]
        if method == "get":
            variants = [dict.fromkeys(query, v) for v in HOSTILE_TEXT] if query else []
            variants += [{name: v} for name in query for v in HOSTILE_TEXT]
        else:
            baseline = api_baseline(client, path, body)
            variants = [{**baseline, field: v} for field in body for v in HOSTILE_JSON]
            variants += [dict.fromkeys(body, v) for v in HOSTILE_JSON]
            variants += [b"\x00\xff", b"[1, 2]", b'"text"', b"{" * 5000]
        for data in variants:
            request = f"{method.upper()} {path} {str(data)[:200]}"
            if method == "get":
                response = answer(request, client.get, path, data)
            else:
                send = getattr(client, method)
                response = answer(request, send, path, data, content_type="application/json")
            sent += 1
            assert response.status_code < 500, (
                f"{request}: {response.status_code} {response.content[:300]!r}"
            )
    return sent


@pytest.fixture
def alpha_objects(alpha, make_user, fresh_rate_limits) -> dict[str, str]:
    """One of each object the tenant site's URLs point at, as URL parameter values."""
    colleague = make_user(alpha, username="colleague", role=Role.OPERATOR)
    node = add_node(alpha)
    rule = add_rule(alpha)
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    store(alpha, dicom(StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID=sop))
    with schema_context(alpha.schema_name):
        token, _raw = api_token_create(user=colleague, name="walker")
        medium = StorageMedium.objects.order_by("pk").first()
    assert medium is not None
    ids = {
        "users": colleague.pk,
        "tokens": token.pk,
        "storage": medium.pk,
        "media": medium.pk,
        "nodes": node.pk,
        "retention": rule.pk,
        "retention-rules": rule.pk,
    }
    objects = {
        # A real study, so that its pages' forms (delete, send) are walked too.
        "<uid:study_uid>": study,
        "<uid:series_uid>": series,
        "<uid:sop_uid>": sop,
        "{study_instance_uid}": "1.2.3.4",
        "<uidb64>": "MQ",
        "<token>": "x-y",
        "<int:item_pk>": "1",
    }
    for section, pk in ids.items():
        objects[f"{section}/<int:pk>"] = f"{section}/{pk}"
        objects[f"/{section}/{{id}}/"] = f"/{section}/{pk}/"
        objects[f"/{section}/{{pk}}/"] = f"/{section}/{pk}/"
    objects["<int:pk>"] = "1"  # uploads, jobs: a missing one is a 404, which is an answer too
    objects["{id}"] = objects["{pk}"] = "1"
    return objects


@pytest.mark.usefixtures("storage")  # media created with hostile roots leave no directories
def test_no_form_of_the_tenant_site_answers_500(alpha, alpha_admin, alpha_objects):
    client = logged_in(tenant_client(alpha), alpha_admin.username)
    pages = page_paths("portal.urls_tenants", alpha_objects)
    assert {"settings_retention_create", "settings_node_create", "user_invite"} <= {
        name for name, _ in pages
    }

    def undo() -> None:
        with schema_context(alpha.schema_name):
            TenantSettings.objects.update(require_admin_2fa=False)

    assert walk_forms(client, pages, still_in="/", undo=undo) > 500


@pytest.mark.usefixtures("storage")
def test_no_operation_of_the_tenant_api_answers_500(alpha, alpha_admin, alpha_objects):
    with schema_context(alpha.schema_name):
        _token, raw = api_token_create(user=alpha_admin, name="hostile")
    client = tenant_client(alpha, HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert walk_api(client, alpha_objects) > 300


def test_no_form_or_operation_of_the_super_admin_site_answers_500(superadmin_client, new_tenant):
    victim = new_tenant("walked").tenant
    domain = victim.domains.first()
    objects = {
        "<slug:slug>": victim.slug,
        "{slug}": victim.slug,
        "<int:pk>": str(domain.pk),
        "{domain_id}": str(domain.pk),
    }
    pages = page_paths("portal.urls_public", objects)
    assert walk_forms(superadmin_client, pages, still_in="/tenants/") > 100
    assert walk_api(superadmin_client, objects) > 50
