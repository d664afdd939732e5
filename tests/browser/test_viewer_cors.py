"""A browser viewer on another origin reads a tenant's DICOMweb: chromium's own CORS checks
let it in where the tenant lists the viewer's origin, and stop it everywhere else."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pydicom
import pytest
import requests
from django_tenants.utils import schema_context
from playwright.sync_api import BrowserContext
from pydicom.data import get_testdata_file

from accounts.models import Role, TokenScope, User
from accounts.services import api_token_create
from configuration.services import settings_update
from tenants.models import Tenant
from tests.browser.conftest import TENANT_ADMIN_PASSWORD, LiveServer, public_schema
from tests.browser.test_superadmin_flow import log_in
from tests.studies.ingest.test_ingest import ingest

VIEWER_PAGE = b"<!doctype html><title>viewer</title><p>A viewer on its own origin.</p>"


class _ViewerPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(VIEWER_PAGE)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def viewer_origin() -> Iterator[str]:
    """A page served from its own origin, as an OHIF deployment would be."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ViewerPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def read_token(slug: str, django_db_blocker, *, cors_origins: list[str]) -> str:  # type: ignore[no-untyped-def]
    with public_schema(django_db_blocker):
        tenant = Tenant.objects.get(slug=slug)
        with schema_context(tenant.schema_name):
            admin = User.objects.get(username="admin", role=Role.ADMIN)
            settings_update(tenant=tenant, actor=admin, cors_origins=cors_origins)
            _, raw = api_token_create(user=admin, name="viewer", scope=TokenScope.READ)
    return raw


FETCH = """async ([url, token]) => {
    try {
        const response = await fetch(url, {
            headers: {Authorization: `Bearer ${token}`, Accept: "application/dicom+json"},
        });
        return {status: response.status, body: await response.json(),
                warning: response.headers.get("Warning")};
    } catch (error) {
        return {blocked: String(error)};
    }
}"""


@pytest.mark.browser
@pytest.mark.live
def test_a_viewer_reads_only_the_tenants_that_list_its_origin(
    live_portal: LiveServer,
    committed_tenant,  # type: ignore[no-untyped-def]
    new_context,  # type: ignore[no-untyped-def]
    viewer_origin: str,
    django_db_blocker,  # type: ignore[no-untyped-def]
) -> None:
    listed = committed_tenant("cors-yes", "Lists the viewer")
    unlisted = committed_tenant("cors-no", "Lists another viewer")
    listed_token = read_token(listed, django_db_blocker, cors_origins=[viewer_origin])
    unlisted_token = read_token(
        unlisted, django_db_blocker, cors_origins=["https://other-viewer.example"]
    )
    context: BrowserContext = new_context()
    page = context.new_page()
    page.goto(viewer_origin)

    search = f"{live_portal.tenant_url(listed)}/dicom-web/studies?fuzzymatching=true"
    allowed = page.evaluate(FETCH, [search, listed_token])
    assert allowed.get("status") == 200, allowed
    assert allowed["body"] == []
    # An exposed header: the viewer can read why its request was narrowed.
    assert "fuzzymatching" in allowed["warning"]

    unlisted_search = f"{live_portal.tenant_url(unlisted)}/dicom-web/studies"
    blocked = page.evaluate(FETCH, [unlisted_search, unlisted_token])
    assert "blocked" in blocked, blocked
    # The same request outside a page (no CORS) is answered: the browser, told by the
    # missing Access-Control-Allow-Origin, is what kept the viewer out.
    direct = requests.get(
        f"http://127.0.0.1:{live_portal.port}/dicom-web/studies",
        headers={
            "Host": f"{unlisted}.localhost:{live_portal.port}",
            "Authorization": f"Bearer {unlisted_token}",
        },
        timeout=10,
    )
    assert direct.status_code == 200
    # The listed tenant's token at the other tenant: blocked before any answer is readable.
    crossed = page.evaluate(
        FETCH, [f"{live_portal.tenant_url(unlisted)}/dicom-web/studies", listed_token]
    )
    assert "blocked" in crossed, crossed


@pytest.mark.browser
@pytest.mark.live
def test_the_copied_ohif_configuration_lets_a_viewer_search_and_retrieve(
    live_portal: LiveServer,
    committed_tenant,  # type: ignore[no-untyped-def]
    new_context,  # type: ignore[no-untyped-def]
    viewer_origin: str,
    django_db_blocker,  # type: ignore[no-untyped-def]
) -> None:
    slug = committed_tenant("ohif", "OHIF Clinic")
    token = read_token(slug, django_db_blocker, cors_origins=[viewer_origin])
    ct = Path(get_testdata_file("CT_small.dcm", download=False))
    with public_schema(django_db_blocker):
        schema = Tenant.objects.get(slug=slug).schema_name
    with public_schema(django_db_blocker), schema_context(schema):
        ingest([("ct.dcm", ct.read_bytes())])
    site = live_portal.tenant_url(slug)

    # The admin copies the data source from /settings/ with the button.
    admin: BrowserContext = new_context()
    admin.grant_permissions(["clipboard-read", "clipboard-write"], origin=site)
    page = admin.new_page()
    log_in(page, site, "admin", TENANT_ADMIN_PASSWORD)
    page.goto(f"{site}/settings/#ohif")
    page.get_by_role("button", name="Copy configuration").click()
    copied = json.loads(page.evaluate("navigator.clipboard.readText()"))
    (source,) = copied["dataSources"]
    roots = source["configuration"]
    assert roots["qidoRoot"] == roots["wadoRoot"] == f"{site}/dicom-web"
    assert "pp_" not in json.dumps(copied)  # no token is ever put into it

    # The viewer, on its own origin, uses exactly those URLs with its read token.
    viewer = new_context().new_page()
    viewer.goto(viewer_origin)
    answer = viewer.evaluate(FETCH, [f"{roots['qidoRoot']}/studies", token])
    assert answer.get("status") == 200, answer
    (study,) = answer["body"]
    retrieve_url = study["00081190"]["Value"][0]
    assert retrieve_url.startswith(roots["wadoRoot"])
    metadata = viewer.evaluate(FETCH, [f"{retrieve_url}/metadata", token])
    assert metadata.get("status") == 200, metadata
    assert [m["00080018"]["Value"] for m in metadata["body"]] == [
        [pydicom.dcmread(ct).SOPInstanceUID]
    ]
