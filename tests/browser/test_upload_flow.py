"""An operator uploads files in a real browser, watches the progress bar finish, opens the
study and sees its thumbnails; a real Celery worker does the ingest."""

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, expect
from pydicom.data import get_testdata_file

from tests.browser.conftest import (
    PROJECT_ROOT,
    TENANT_ADMIN_PASSWORD,
    LiveServer,
    _test_database_url,
)
from tests.browser.test_superadmin_flow import log_in


@pytest.fixture
def celery_worker_process(live_portal: LiveServer, tmp_path: Path) -> Iterator[None]:
    """A worker consuming the ingest queue, against the same test database as the server."""
    log = tmp_path / "worker.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": _test_database_url(),
        "PORTAL_STORAGE_ROOT": str(live_portal.storage_root),
    }
    with log.open("wb") as output:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "portal",
                "worker",
                "-Q",
                "default",
                "-c",
                "1",
                "-P",
                "solo",
                "-l",
                "warning",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=output,
            stderr=output,
        )
    try:
        yield
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()


@pytest.mark.browser
@pytest.mark.live
@pytest.mark.worker
def test_upload_in_the_browser_then_open_the_study_with_thumbnails(
    live_portal: LiveServer,
    celery_worker_process: None,
    new_context: Callable[[], BrowserContext],
    committed_tenant: Callable[[str, str], str],
) -> None:
    slug = committed_tenant("up", "Upload Clinic")
    site = live_portal.tenant_url(slug)
    page = new_context().new_page()
    log_in(page, site, "admin", TENANT_ADMIN_PASSWORD)

    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Upload").click()
    files = [get_testdata_file(name, download=False) for name in ("CT_small.dcm", "MR_small.dcm")]
    page.locator("#id_files").set_input_files(files)
    page.get_by_role("button", name="Upload").click()

    # The job page polls its progress until the worker has processed both files.
    expect(page.get_by_role("heading", level=1)).to_contain_text("Ingest job", timeout=20_000)
    progress = page.locator("#ingest-progress")
    expect(progress).to_contain_text("Done", timeout=60_000)
    expect(page.locator("progress")).to_have_attribute("value", "100")
    # The files' table followed the job too, without a reload: no file is left "Pending".
    outcomes = page.locator("#ingest-live table.data tbody tr .badge")
    expect(outcomes).to_have_count(2)
    expect(outcomes.filter(has_text="Pending")).to_have_count(0)
    expect(outcomes.filter(has_text="Stored")).to_have_count(2)

    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Studies").click()
    rows = page.locator("table.data tbody tr")
    expect(rows).to_have_count(2)
    rows.first.get_by_role("link").first.click()
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    thumbnail = page.locator("td.thumb img").first
    expect(thumbnail).to_be_visible(timeout=20_000)
    # Visible is not loaded: decode() settles once the bytes are in (rejects if not an image).
    width = thumbnail.evaluate("img => img.decode().then(() => img.naturalWidth, () => 0)")
    assert width > 0, "the thumbnail did not load as an image"
