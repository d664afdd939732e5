"""A super-admin creates a tenant in a real browser; its admin sets a password and logs in.

Drives Debian's chromium against the portal running as its own server process, on
subdomain routing: the super-admin site at `localhost:<port>`, the new tenant at
`<slug>.localhost:<port>` (chromium resolves `*.localhost` to the loopback address).
"""

import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.conftest import Credentials, LiveServer

ADMIN_PASSWORD = "Velvet-Compass-7342-harbor"
# Tenant creation clones a schema: give it longer than Playwright's 5 s default.
CREATE_TIMEOUT_MS = 20_000


def log_in(page: Page, base_url: str, username: str, password: str) -> None:
    page.goto(f"{base_url}/account/login/")
    page.locator("input[name=username]").fill(username)
    page.locator("input[name=password]").fill(password)
    page.get_by_role("button", name="Log in").click()


@pytest.mark.browser
@pytest.mark.live
def test_superadmin_creates_tenant_whose_admin_sets_password_and_logs_in(
    live_portal: LiveServer,
    superadmin: Credentials,
    new_context: Callable[[], BrowserContext],
    purge_tenants_after: list[str],
) -> None:
    """Create a tenant, use its one-time link once, log in to it, and stay out of the
    super-admin site with the tenant's session."""
    slug = f"br-{uuid.uuid4().hex[:6]}"
    name = f"Browser Clinic {slug[3:]}"
    purge_tenants_after.append(slug)
    tenant_url = live_portal.tenant_url(slug)

    # The super-admin logs in on the base domain and creates the tenant.
    root = new_context().new_page()
    log_in(root, live_portal.url, superadmin.username, superadmin.password)
    expect(root).to_have_url(f"{live_portal.url}/tenants/")
    root.get_by_role("navigation", name="Sections").get_by_role("link", name="New tenant").click()
    expect(root).to_have_url(f"{live_portal.url}/tenants/new/")
    root.get_by_label("Slug").fill(slug)
    root.get_by_label("Display name").fill(name)
    root.get_by_label("Admin e-mail").fill(f"head@{slug}.example")
    root.get_by_role("button", name="Create tenant").click()
    expect(root.get_by_role("heading", level=1)).to_have_text(
        f"{name} is ready", timeout=CREATE_TIMEOUT_MS
    )
    link = root.locator("#set-password-url").input_value()
    parts = urlsplit(link)
    assert (parts.scheme, parts.netloc) == ("http", f"{slug}.localhost:{live_portal.port}"), link
    assert parts.path.startswith("/account/set-password/"), link

    # The tenant admin, in a browser of their own, follows the link and chooses a password.
    context = new_context()
    page = context.new_page()
    page.goto(link)
    expect(page.get_by_role("heading", level=1)).to_have_text("Set your password")
    page.locator("input[name=new_password1]").fill(ADMIN_PASSWORD)
    page.locator("input[name=new_password2]").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Set password").click()
    expect(page).to_have_url(f"{tenant_url}/account/login/")
    expect(page.get_by_role("status")).to_contain_text("Your password is set")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Log in to {name}")

    log_in(page, tenant_url, "admin", ADMIN_PASSWORD)
    expect(page).to_have_url(f"{tenant_url}/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    expect(page.locator("header .brand")).to_have_text(name)

    # The link worked once.
    page.goto(link)
    expect(page.get_by_role("heading", level=1)).to_have_text("This link is no longer valid")

    # The tenant's login does not open the super-admin site: neither as the browser sends
    # it (the cookie belongs to the tenant's host) nor planted under the base domain's name.
    fleet = f"{live_portal.url}/tenants/"
    page.goto(fleet)
    expect(page).to_have_url(f"{live_portal.url}/account/login/?next=/tenants/")
    tenant_cookie = next(
        c for c in context.cookies(tenant_url) if c["name"] == f"portal_session_{slug}"
    )
    context.add_cookies(
        [{"name": "portal_session", "value": tenant_cookie["value"], "url": f"{live_portal.url}/"}]
    )
    page.goto(fleet)
    expect(page).to_have_url(f"{live_portal.url}/account/login/?next=/tenants/")
