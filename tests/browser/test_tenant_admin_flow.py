"""A tenant admin runs the tenant in a real browser: invites a user, adds a storage medium,
renames the tenant (the AE title is shown but only the platform moves it), and finds all three
in the audit log."""

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import BrowserContext, expect

from tests.browser.conftest import TENANT_ADMIN_PASSWORD, LiveServer
from tests.browser.test_superadmin_flow import log_in


def label(text: str) -> re.Pattern[str]:
    """A field's label, with or without the required-field star after it."""
    return re.compile(rf"^{re.escape(text)}( \*)?$")


@pytest.mark.browser
@pytest.mark.live
def test_tenant_admin_invites_adds_medium_renames_and_audits(
    live_portal: LiveServer,
    new_context: Callable[[], BrowserContext],
    committed_tenant: Callable[[str, str], str],
) -> None:
    slug = committed_tenant("ta", "Admin Flow Clinic")
    site = live_portal.tenant_url(slug)
    page = new_context().new_page()
    log_in(page, site, "admin", TENANT_ADMIN_PASSWORD)
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    nav = page.get_by_role("navigation", name="Sections")

    # Invite a user: the one-time link is shown on the page.
    nav.get_by_role("link", name="Users").click()
    page.get_by_role("link", name="Invite user").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Invite a user")
    page.get_by_label(label("Username")).fill("radiographer")
    page.get_by_label(label("E-mail")).fill("radiographer@clinic.example")
    page.get_by_label(label("Role")).select_option("operator")
    page.get_by_role("button", name="Invite").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("radiographer is invited")
    expect(page.locator("#set-password-url")).to_have_value(
        re.compile(rf"^http://{slug}\.localhost:{live_portal.port}/account/set-password/")
    )

    # Add a second storage medium inside the tenant's root.
    nav.get_by_role("link", name="Storage").click()
    page.get_by_role("link", name="Add medium").click()
    page.get_by_label(label("Name")).fill("archive-2")
    page.get_by_label(label("Directory")).fill("archive-2")
    page.get_by_label(label("Capacity (GiB)")).fill("1")
    page.get_by_role("button", name="Add medium").click()
    expect(page.locator("body")).to_contain_text("archive-2")

    # Rename the tenant; the AE title routes DICOM traffic, so it is shown but not editable.
    nav.get_by_role("link", name="Settings").click()
    expect(page.get_by_label(label("AE title")).first).to_be_disabled()
    page.get_by_label(label("Display name")).first.fill("Admin Flow Clinic North")
    page.get_by_role("button", name="Save identity").click()
    expect(page.locator("header")).to_contain_text("Admin Flow Clinic North")

    # All three are in the audit log, with who did them.
    nav.get_by_role("link", name="Audit log").click()
    log = page.locator("table.data")
    for action in ("user.invite", "medium.create", "settings.update"):
        expect(log.locator("tr", has_text=action).first).to_contain_text("admin")
