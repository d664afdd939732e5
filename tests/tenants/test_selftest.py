"""`manage.py tenant selftest`: the tenant boundary probed route by route, in the suite too,
so that a new route without isolation fails CI; and proof that the probe sees a leak."""

from io import StringIO

import pytest
from django.core.management import call_command
from django.http import HttpResponse
from django.urls import clear_url_caches, path
from django_tenants.utils import schema_context

from portal import urls_tenants
from studies.models import Study
from tenants.models import Tenant, TenantStatus
from tenants.selftest import tenant_selftest


@pytest.mark.django_db
def test_the_selftest_finds_no_leak_and_purges_its_tenants():
    out = StringIO()
    call_command("tenant", "selftest", stdout=out)
    text = out.getvalue()
    assert "no leak across the tenant boundary" in text, text
    assert "0 leaks, 0 server errors" in text, text
    # Not blind: B's session and token saw B's own data; A's credentials saw none of it.
    seen = dict(
        part.split(": ")
        for part in text.split("answers showing B its own data (")[1].split(")")[0].split(", ")
    )
    assert int(seen["B's admin session"]) > 10 and int(seen["B's full token"]) > 5, text
    assert seen["A's token"] == "0" and seen["A's session cookie"] == "0", text
    made = Tenant.all_objects.filter(slug__startswith="selftest-")
    assert made.count() == 2 and all(t.status == TenantStatus.PURGED for t in made)


@pytest.mark.django_db
def test_a_route_that_ignores_the_tenant_is_reported(monkeypatch):
    """A view that reads another schema's rows (here: every tenant's patient names, as a
    careless cross-schema query would) must be caught by the probe."""

    def everyone(request):  # type: ignore[no-untyped-def]
        names = []
        for tenant in Tenant.objects.exclude(schema_name="public"):
            with schema_context(tenant.schema_name):
                names += [str(s.patient_name) for s in Study.objects.all()]
        return HttpResponse(", ".join(names))

    leaky = [*urls_tenants.urlpatterns, path("leaky/", everyone)]
    monkeypatch.setattr(urls_tenants, "urlpatterns", leaky)
    clear_url_caches()
    try:
        report = tenant_selftest()
    finally:
        monkeypatch.undo()
        clear_url_caches()
    assert not report.ok
    assert {leak.url.rsplit("/", 2)[-2] for leak in report.leaks} == {"leaky"}
