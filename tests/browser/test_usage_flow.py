"""The super-admin sees a tenant's metered usage on the fleet page's chart and downloads it
as CSV for billing, in a real browser."""

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from django_tenants.utils import schema_context
from playwright.sync_api import BrowserContext, expect

from studies.models import StorageMedium
from tenants.models import Tenant
from tenants.usage import usage_record_compute, utc_today
from tests.browser.conftest import Credentials, LiveServer, public_schema
from tests.browser.test_superadmin_flow import log_in

STORED = 7 * 1024 * 1024


@pytest.mark.browser
@pytest.mark.live
def test_usage_chart_and_csv_show_the_metered_day(
    live_portal: LiveServer,
    superadmin: Credentials,
    committed_tenant: Callable[[str, str], str],
    new_context: Callable[[], BrowserContext],
    django_db_blocker,  # type: ignore[no-untyped-def]
) -> None:
    slug = committed_tenant("meter", "Metered Clinic")
    today = utc_today()
    with public_schema(django_db_blocker):
        tenant = Tenant.objects.get(slug=slug)
        with schema_context(tenant.schema_name):
            StorageMedium.objects.filter(name="default").update(used_bytes=STORED)
        usage_record_compute(tenant=tenant, day=today)

    page = new_context().new_page()
    log_in(page, live_portal.url, superadmin.username, superadmin.password)
    expect(page).to_have_url(f"{live_portal.url}/tenants/")
    usage = page.locator("#usage")
    expect(usage).to_be_visible()
    # Today's bar of stored bytes carries at least this tenant's bytes (others may add).
    bar = usage.locator(f'#usage-bytes_total rect[data-day="{today.isoformat()}"]')
    expect(bar).to_have_count(1)
    assert int(bar.get_attribute("data-value") or 0) >= STORED
    assert float(bar.get_attribute("height") or 0) > 0

    with page.expect_download() as download:
        usage.get_by_role("link", name="Export CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    (mine,) = [row for row in rows if row["tenant"] == slug]
    assert mine["day"] == today.isoformat()
    assert int(mine["bytes_total"]) == STORED
    assert json.loads(mine["bytes_by_medium"]) == {"default": STORED}
