"""The Content-Security-Policy in a real browser: injected script does not run, and the pages
that ship scripts of their own (API docs, copy buttons) work under it without the internet."""

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import TENANT_ADMIN_PASSWORD, ContextFactory, LiveServer
from tests.browser.test_superadmin_flow import log_in


@pytest.mark.browser
@pytest.mark.live
def test_script_injected_into_a_tenant_page_does_not_run(
    live_portal: LiveServer, new_context: ContextFactory, committed_tenant
) -> None:
    slug = committed_tenant("csp", "Policy Clinic")
    page = new_context().new_page()
    log_in(page, live_portal.tenant_url(slug), "admin", TENANT_ADMIN_PASSWORD)
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")

    # What a stored-XSS payload would amount to: markup with an inline script and a handler.
    page.evaluate(
        """() => {
            const script = document.createElement("script");
            script.textContent = "window.injected = 'script ran'";
            document.body.appendChild(script);
            const img = document.createElement("img");
            img.setAttribute("src", "data:,x");
            img.setAttribute("onerror", "window.injected = 'handler ran'");
            document.body.appendChild(img);
        }"""
    )
    page.wait_for_timeout(200)
    assert page.evaluate("() => window.injected === undefined")
    assert any("script-src" in text for text in new_context.csp_violations)
    new_context.csp_violations.clear()  # the refusals this test provoked on purpose


@pytest.mark.browser
@pytest.mark.live
def test_api_docs_render_from_the_portal_alone(
    live_portal: LiveServer, new_context: ContextFactory, committed_tenant
) -> None:
    slug = committed_tenant("docs", "Docs Clinic")
    site = live_portal.tenant_url(slug)
    context = new_context()
    hosts: set[str] = set()
    context.on("request", lambda request: hosts.add(urlsplit(request.url).hostname or ""))
    page = context.new_page()
    log_in(page, site, "admin", TENANT_ADMIN_PASSWORD)
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")

    page.goto(f"{site}/api/docs/")
    expect(page.locator(".swagger-ui .title").first).to_contain_text("PACS portal API")
    expect(page.locator(".opblock").first).to_be_visible()
    assert hosts <= {urlsplit(site).hostname}, f"requests left the portal: {hosts}"
