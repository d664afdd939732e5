"""`manage.py tenant selftest`: the tenant boundary probed route by route, in the suite too,
so that a new route without isolation fails CI; and proof that the probe sees a leak."""

import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.http import HttpResponse
from django.test import Client
from django.urls import clear_url_caches, path
from django_tenants.utils import schema_context

from portal import urls_tenants
from studies.models import Study
from tenants.models import SelftestRun, SelftestStatus, Tenant, TenantStatus
from tenants.selftest import selftest_execute, tenant_selftest


def test_the_selftest_finds_no_leak_and_purges_its_tenants(autocommit_db):
    """Outside a test transaction, as an operator runs it: the DIMSE half needs committed
    tenants (its gateway's associations have connections of their own)."""
    out = StringIO()
    call_command("tenant", "selftest", stdout=out)
    text = out.getvalue()
    made = Tenant.all_objects.filter(slug__in=re.findall(r"purged (selftest-\S+)", text))
    assert "no leak across the tenant boundary" in text, text
    assert "0 leaks, 0 server errors" in text, text
    # Not blind: B's session and token saw B's own data; A's credentials saw none of it.
    seen = dict(
        part.split(": ")
        for part in text.split("answers showing B its own data (")[1].split(")")[0].split(", ")
    )
    assert int(seen["B's admin session"]) > 10 and int(seen["B's full token"]) > 5, text
    assert seen["A's token"] == "0" and seen["A's session cookie"] == "0", text
    # DIMSE: B's node asked B's AE title (and A's) about A's study, and found its own.
    assert "DIMSE: 18 DIMSE requests on port" in text, text
    assert int(seen["B's DICOM node"]) >= 5, text
    assert [t.status for t in made] == [TenantStatus.PURGED] * 2


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


def test_a_gateway_that_answers_for_the_wrong_tenant_is_reported(autocommit_db, monkeypatch):
    """The DIMSE half sees a leak too: here B's AE title is routed to A's schema, and any
    node may query there, as a careless lookup of the called title would do."""
    from configuration.selectors import NodeAdmission
    from dicomnet import gateway

    routed = gateway.tenant_for_called_ae

    def crossed(called_ae: str) -> Tenant | None:
        tenant = routed(called_ae)
        if tenant is not None and tenant.slug.startswith("selftest-") and called_ae.endswith("B"):
            return routed(called_ae[:-1] + "A")
        return tenant

    monkeypatch.setattr(gateway, "tenant_for_called_ae", crossed)
    monkeypatch.setattr(gateway, "node_admission", lambda **_: NodeAdmission(True, True))
    report = tenant_selftest()
    dimse = {leak.url.split(" to ")[0] for leak in report.leaks if leak.method == "DIMSE"}
    assert {
        "C-FIND study",
        "C-FIND series",
        "C-FIND image",
        "C-FIND patient",
        "C-GET study",
    } <= dimse
    assert not report.ok


def test_the_super_admin_site_runs_it_and_keeps_the_report(
    superadmin_client, alpha_admin_client, django_capture_on_commit_callbacks
):
    empty = superadmin_client.get("/selftest/").content.decode()
    assert "No self-test has run yet" in empty
    with django_capture_on_commit_callbacks() as queued:
        answer = superadmin_client.post("/selftest/")
        again = superadmin_client.post("/selftest/")  # while queued: the same run, not a second
    assert answer.status_code == again.status_code == 302 and answer["Location"] == "/selftest/"
    assert len(queued) == 1
    (run,) = SelftestRun.objects.all()
    assert run.status == SelftestStatus.QUEUED
    assert 'hx-trigger="every 2s"' in superadmin_client.get("/selftest/").content.decode()
    selftest_execute(run.pk)  # what the worker does with the queued task
    run.refresh_from_db()
    assert run.status == SelftestStatus.PASSED and run.leaks == [] and run.routes > 50
    assert run.requested_by == "root" and run.finished_at is not None
    page = superadmin_client.get("/selftest/").content.decode()
    assert "No leak" in page and f"{run.probes}" in page
    partial = superadmin_client.get(
        "/selftest/", {"partial": "1"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert partial.startswith('<section class="card" id="selftest-runs"')
    assert "hx-trigger" not in partial  # finished: the page stops polling
    # Only super-admins: a tenant admin has no such page, an anonymous visitor logs in first.
    assert alpha_admin_client.get("/selftest/").status_code == 404
    anonymous = Client(HTTP_HOST="localhost").post("/selftest/")
    assert anonymous.status_code == 302 and "/account/login/" in anonymous["Location"]
    assert SelftestRun.objects.count() == 1
