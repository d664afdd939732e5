"""The viewer in the box: OHIF at each tenant's /viewer/ draws that tenant's images, and a
viewer opened on another tenant's site cannot load them."""

import io
from pathlib import Path

import pydicom
import pytest
from django_tenants.utils import schema_context
from PIL import Image
from playwright.sync_api import BrowserContext, Page, Response
from pydicom.data import get_testdata_file

from studies.viewer.views import viewer_root
from tenants.models import Tenant
from tests.browser.conftest import TENANT_ADMIN_PASSWORD, LiveServer, public_schema
from tests.browser.test_superadmin_flow import log_in
from tests.studies.ingest.test_ingest import ingest

CT = Path(get_testdata_file("CT_small.dcm", download=False))
VIEWPORT = ".cornerstone-viewport-element canvas, canvas.cornerstone-canvas"
DRAW_SECONDS = 60

pytestmark = [pytest.mark.browser, pytest.mark.live]


@pytest.fixture(autouse=True)
def _viewer_installed() -> None:
    if viewer_root() is None:
        pytest.fail("the OHIF viewer is not installed: `make install` fetches it")


def drawn_levels(page: Page) -> int:
    """How many distinct grey levels the first viewport shows (1 when it is blank)."""
    canvas = page.locator(VIEWPORT).first
    image = Image.open(io.BytesIO(canvas.screenshot())).convert("L")
    return len(image.getcolors(256) or ())


def dicomweb_answers(page: Page) -> list[Response]:
    answers: list[Response] = []
    page.on("response", lambda r: answers.append(r) if "/dicom-web/" in r.url else None)
    return answers


def test_the_viewer_draws_a_study_and_another_tenants_viewer_cannot_load_it(
    live_portal: LiveServer,
    committed_tenant,  # type: ignore[no-untyped-def]
    new_context,  # type: ignore[no-untyped-def]
    django_db_blocker,  # type: ignore[no-untyped-def]
) -> None:
    owner = committed_tenant("view-a", "Viewer Hospital A")
    other = committed_tenant("view-b", "Viewer Clinic B")
    with public_schema(django_db_blocker):
        schema = Tenant.objects.get(slug=owner).schema_name
    with public_schema(django_db_blocker), schema_context(schema):
        ingest([("ct.dcm", CT.read_bytes())])
    study_uid = pydicom.dcmread(CT).StudyInstanceUID

    # Tenant A's admin opens the study from its page.
    site = live_portal.tenant_url(owner)
    context: BrowserContext = new_context()
    page = context.new_page()
    log_in(page, site, "admin", TENANT_ADMIN_PASSWORD)
    page.goto(f"{site}/studies/{study_uid}/")
    answers = dicomweb_answers(page)
    page.get_by_role("link", name="Open in viewer").first.click()
    page.wait_for_url(f"{site}/viewer/viewer?StudyInstanceUIDs={study_uid}*")
    page.locator(VIEWPORT).first.wait_for(timeout=DRAW_SECONDS * 1000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('canvas')].some(c => c.width > 0)",
        timeout=DRAW_SECONDS * 1000,
    )
    deadline = DRAW_SECONDS * 4
    while drawn_levels(page) < 16 and deadline:
        page.wait_for_timeout(250)
        deadline -= 1
    assert drawn_levels(page) >= 16, "the viewer drew no image"
    assert all(r.url.startswith(f"{site}/dicom-web/") for r in answers)
    assert any("/frames/" in r.url and r.status == 200 for r in answers)

    # Tenant B's admin asks B's viewer for A's study: B's archive does not have it.
    other_site = live_portal.tenant_url(other)
    intruder = new_context().new_page()
    log_in(intruder, other_site, "admin", TENANT_ADMIN_PASSWORD)
    crossed = dicomweb_answers(intruder)
    intruder.goto(f"{other_site}/viewer/viewer?StudyInstanceUIDs={study_uid}")
    intruder.wait_for_timeout(5000)
    assert crossed, "B's viewer asked nothing"
    assert all(r.url.startswith(f"{other_site}/dicom-web/") for r in crossed)
    assert not any("/frames/" in r.url and r.status == 200 for r in crossed)
    for response in crossed:
        if response.status == 200 and "json" in response.headers.get("content-type", ""):
            assert study_uid not in response.text()
    canvases = intruder.locator(VIEWPORT)
    assert canvases.count() == 0 or drawn_levels(intruder) < 4
