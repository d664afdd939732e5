"""Every page of both sites fits a phone (390 px) and a desktop (1440 px): nothing wider than
the window, and the navigation reaches every section. The pages are found by following the
links of each site from its front page, with data that stretches layouts: long names, 64-
character UIDs, audit details."""

import io
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

import pytest
from django_tenants.utils import schema_context
from playwright.sync_api import BrowserContext, Page, expect
from playwright.sync_api import Error as PlaywrightError
from pydicom.dataset import Dataset

from portal.management.commands.demo_seed import synthetic_instance
from studies.ingest import ingest_item_stage, ingest_job_create, ingest_job_submit
from tenants.models import Tenant
from tests.browser.conftest import (
    TENANT_ADMIN_PASSWORD,
    Credentials,
    LiveServer,
    public_schema,
)
from tests.browser.test_superadmin_flow import log_in

WIDTHS = (390, 1440)
MAX_PAGES = 40
# Not pages: downloads, machine interfaces, and what would end the session or change data.
SKIP = (
    "/account/logout",
    ".csv",
    ".zip",
    "/api/",
    "/dicom-web/",
    "/metrics",
    "/health/",
    "/download",
    "/wado",
    "/thumbnail",
    "/preview",
    "/rendered",
    "/viewer/",
)
LONG = "Cardiothoracic imaging follow-up after transcatheter aortic valve implantation"


def _uid(n: int) -> str:
    """A 64-character UID: the longest the standard allows, and what breaks tables."""
    stem = f"1.2.826.0.1.3680043.10.543.{n}."
    return stem + "9" * (64 - len(stem))


def _fill(slug: str, django_db_blocker) -> None:  # type: ignore[no-untyped-def]
    with public_schema(django_db_blocker):
        tenant = Tenant.objects.get(slug=slug)
        with schema_context(tenant.schema_name):
            job = ingest_job_create(source="upload", description=LONG)
            for n in range(2):
                ds = Dataset()
                ds.PatientName = "VERYLONGFAMILYNAMEWITHOUTANYSPACES^Bartholomew-Maximilian"
                ds.PatientID = "PID-" + "7" * 60
                ds.StudyDescription = LONG
                ds.StudyInstanceUID, ds.SeriesInstanceUID = _uid(2 * n), _uid(2 * n + 1)
                ds.Modality, ds.SeriesDescription = "CT", LONG
                series = Dataset()
                series.Modality, series.SeriesInstanceUID = "CT", ds.SeriesInstanceUID
                series.SeriesNumber, series.SeriesDescription = 1, LONG
                data = synthetic_instance(ds, "CT", series, 1)
                ingest_item_stage(job=job, name=f"{'x' * 80}-{n}.dcm", stream=io.BytesIO(data))
            ingest_job_submit(job=job, run_now=True)


def _shape(url: str) -> str:
    """One page of each kind: ids, UIDs and tenant slugs stand for all of their kind."""
    parts = urlsplit(url)
    segments = parts.path.split("/")
    shape = [
        "*"
        if any(c.isdigit() for c in seg)
        or (i and segments[i - 1] == "tenants" and seg not in {"new", ""})
        else seg
        for i, seg in enumerate(segments)
    ]
    keys = sorted(pair.split("=", 1)[0] for pair in parts.query.split("&") if pair)
    return "/".join(shape) + "?" + "&".join(keys)


def _crawl(page: Page, start: str) -> list[str]:
    """The site's pages reachable from `start` by links, breadth first, one of each shape,
    at most MAX_PAGES."""
    origin = urlsplit(start).netloc
    seen, queue, pages = {_shape(start)}, [start], []
    while queue and len(pages) < MAX_PAGES:
        url = queue.pop(0)
        try:
            response = page.goto(url)
        except PlaywrightError:  # a download (JSON, CSV), not a page
            continue
        if (
            response is None
            or response.status != 200
            or "text/html" not in (response.headers.get("content-type", ""))
        ):
            continue
        pages.append(url)
        for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"):
            link = urljoin(url, href).split("#", 1)[0]
            parts = urlsplit(link)
            shape = _shape(link)
            if parts.netloc != origin or shape in seen or any(s in parts.path for s in SKIP):
                continue
            seen.add(shape)
            queue.append(link)
    return pages


def _too_wide(page: Page, width: int, urls: list[str]) -> list[str]:
    page.set_viewport_size({"width": width, "height": 900})
    wide = []
    for url in urls:
        page.goto(url)
        scroll = page.evaluate("() => document.documentElement.scrollWidth")
        if scroll > width:
            culprit = page.evaluate(
                """(width) => {
                    let worst = null;
                    for (const el of document.querySelectorAll('body *')) {
                        const right = el.getBoundingClientRect().right;
                        if (right > width + 1 && (!worst || right > worst.right))
                            worst = {right, tag: el.tagName, cls: el.className, text:
                                     (el.textContent || '').trim().slice(0, 40)};
                    }
                    return worst;
                }""",
                width,
            )
            wide.append(f"{urlsplit(url).path} {scroll} px: {culprit}")
    return wide


def _nav_fits(page: Page, url: str, width: int) -> None:
    """Every section link in the top bar is on screen at this width."""
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(url)
    links = page.locator("header nav a, header .account a, header .account button")
    assert links.count() >= 3
    for i in range(links.count()):
        link = links.nth(i)
        expect(link).to_be_visible()
        box = link.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, (
            f"{link.inner_text()!r} is drawn outside the {width} px window: {box}"
        )


@pytest.mark.browser
@pytest.mark.live
def test_every_tenant_page_fits_a_phone_and_a_desktop(
    live_portal: LiveServer,
    committed_tenant: Callable[[str, str], str],
    new_context: Callable[[], BrowserContext],
    django_db_blocker,  # type: ignore[no-untyped-def]
) -> None:
    slug = committed_tenant("layout", "Saint Bartholomew's University Teaching Hospital Trust")
    _fill(slug, django_db_blocker)
    site = live_portal.tenant_url(slug)
    page = new_context().new_page()
    log_in(page, site, "admin", TENANT_ADMIN_PASSWORD)
    pages = _crawl(page, f"{site}/")
    paths = {urlsplit(url).path for url in pages}
    # The crawl reached every section and the deep pages.
    for section in (
        "/studies/",
        "/upload/",
        "/jobs/",
        "/users/",
        "/storage/",
        "/settings/",
        "/audit/",
        "/account/",
    ):
        assert section in paths, (section, sorted(paths))
    assert any(path.startswith("/studies/") and path != "/studies/" for path in paths)
    for width in WIDTHS:
        _nav_fits(page, f"{site}/", width)
        assert _too_wide(page, width, pages) == [], width


@pytest.mark.browser
@pytest.mark.live
def test_every_super_admin_page_fits_a_phone_and_a_desktop(
    live_portal: LiveServer,
    superadmin: Credentials,
    committed_tenant: Callable[[str, str], str],
    new_context: Callable[[], BrowserContext],
) -> None:
    committed_tenant("layout-fleet", "Saint Bartholomew's University Teaching Hospital Trust")
    page = new_context().new_page()
    log_in(page, live_portal.url, superadmin.username, superadmin.password)
    pages = _crawl(page, f"{live_portal.url}/")
    paths = {urlsplit(url).path for url in pages}
    assert {"/tenants/", "/tenants/new/", "/selftest/"} <= paths, sorted(paths)
    assert any(path.endswith("/usage/") for path in paths), sorted(paths)
    for width in WIDTHS:
        _nav_fits(page, f"{live_portal.url}/", width)
        assert _too_wide(page, width, pages) == [], width
