"""Usage metering: each figure of a day counted from the tenant's own rows, nothing of another
tenant, recomputation replacing the row, the hourly meter, the dashboard, the CSV and who may
see them."""

import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from unittest.mock import patch

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone
from django_tenants.utils import schema_context

from audit.models import Outcome
from audit.services import audit_record
from configuration.models import RetentionRule
from jobs.models import JobRun, JobStatus
from studies.index.services import study_delete
from studies.maintenance.services import retention_apply
from studies.models import Instance, StorageMedium, Study
from tenants import services
from tenants.models import Tenant, UsageRecord
from tenants.tasks import meter_usage
from tenants.usage import usage_record_compute, utc_today
from tests.conftest import TWINS, logged_in, owner_role, tenant_client
from tests.dicomweb.test_qido import index_study
from tests.studies.conftest import storage  # noqa: F401
from tests.studies.ingest.test_ingest import distinct_instances, ingest

DAY = utc_today() - timedelta(days=5)


def at(day: date, hour: int = 10, minute: int = 0, second: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute, second), tzinfo=UTC)


@contextmanager
def on(moment: datetime) -> Iterator[None]:
    """Rows created inside get `moment` as their auto_now_add time (audit rows cannot be
    updated afterwards: a trigger refuses it)."""
    with patch("django.utils.timezone.now", return_value=moment):
        yield


def study_on(tenant: Tenant, moment: datetime, instances: int = 1) -> str:
    with on(moment):
        return index_study(tenant, name="METER^TEST", instances=instances)["study"]


def retrieve_row(tenant: Tenant, moment: datetime, **details: object) -> None:
    with schema_context(tenant.schema_name), on(moment):
        outcome = str(details.pop("outcome", Outcome.SUCCESS))
        audit_record(
            action="dicomweb.retrieve",
            actor_name="viewer",
            object_type="study",
            object_id="1.2.3",
            outcome=outcome,
            details={"method": "GET", **details},
        )


def job_run(tenant: Tenant, started: datetime, finished: datetime | None, **fields: object) -> None:
    with schema_context(tenant.schema_name):
        run = JobRun.objects.create(job="storage-usage", period=f"{started:%Y%m%d%H%M%S}", **fields)
        JobRun.objects.filter(pk=run.pk).update(started_at=started, finished_at=finished)


def medium_bytes(tenant: Tenant, **used: int) -> None:
    with schema_context(tenant.schema_name):
        for name, value in used.items():
            medium, _ = StorageMedium.objects.get_or_create(
                name=name,
                defaults={"root": f"{tenant.storage_root}/{name}", "capacity_bytes": 1 << 40},
            )
            StorageMedium.objects.filter(pk=medium.pk).update(used_bytes=value)


@pytest.fixture
def alpha_day(alpha, beta) -> None:
    """A day of alpha's activity between rows of the days around it, and a busy beta."""
    study_on(alpha, at(DAY, 0, 0, 0), instances=3)  # the first instant of the day counts
    study_on(alpha, at(DAY, 23, 59, 59), instances=1)
    study_on(alpha, at(DAY - timedelta(days=1), 23, 59, 59), instances=2)  # the day before
    study_on(alpha, at(DAY + timedelta(days=1), 0, 0, 0), instances=2)  # the day after
    doomed = study_on(alpha, at(DAY - timedelta(days=10)), instances=2)
    study_on(alpha, at(DAY - timedelta(days=40)), instances=4)  # retention takes it
    with schema_context(alpha.schema_name), on(at(DAY, 12)):
        study_delete(study=Study.objects.get(study_instance_uid=doomed))
        RetentionRule.objects.create(modality="*", days=30)
        assert retention_apply()["deleted"] == 1
    with schema_context(alpha.schema_name), on(at(DAY - timedelta(days=1), 12)):
        audit_record(action="study.delete", details={"instances": 50})  # the day before
    retrieve_row(alpha, at(DAY, 9), instances=2, bytes=1000)
    retrieve_row(alpha, at(DAY, 10), instances=1, bytes=500)
    retrieve_row(alpha, at(DAY, 11), instances=1, bytes=700, method="HEAD")
    retrieve_row(alpha, at(DAY, 12), instances=1, bytes=999, outcome=Outcome.FAILURE)
    retrieve_row(alpha, at(DAY - timedelta(days=1), 12), instances=1, bytes=5000)
    job_run(alpha, at(DAY, 10), at(DAY, 10, 1, 30))  # 90 s
    job_run(alpha, at(DAY, 22, 58), at(DAY, 23), status=JobStatus.FAILED)  # 120 s
    job_run(alpha, at(DAY - timedelta(days=1), 23, 59, 30), at(DAY, 0, 0, 30))  # 60 s
    job_run(alpha, at(DAY, 23, 59), at(DAY + timedelta(days=1), 0, 1))  # finished the day after
    job_run(alpha, at(DAY, 15), None)  # still running
    medium_bytes(alpha, default=12345, archive=1000)
    # beta on the same day, with figures alpha's record would show if it leaked.
    study_on(beta, at(DAY, 10), instances=7)
    retrieve_row(beta, at(DAY, 10), instances=7, bytes=77777)
    job_run(beta, at(DAY, 10), at(DAY, 11))
    with schema_context(beta.schema_name), on(at(DAY, 12)):
        audit_record(action="study.delete", details={"instances": 70})
    medium_bytes(beta, default=999999)


def figures(record: UsageRecord) -> dict[str, object]:
    return {
        name: getattr(record, name)
        for name in (
            "bytes_by_medium",
            "bytes_total",
            "studies_added",
            "studies_deleted",
            "instances_added",
            "instances_deleted",
            "dicomweb_requests",
            "dicomweb_bytes_served",
            "job_seconds",
        )
    }


def test_a_day_is_counted_from_the_tenants_own_rows(alpha, beta, alpha_day):
    record = usage_record_compute(tenant=alpha, day=DAY)

    assert figures(record) == {
        "bytes_by_medium": {"default": 12345, "archive": 1000},
        "bytes_total": 13345,
        "studies_added": 2,  # 00:00:00 and 23:59:59 of the day, not the days around it
        "studies_deleted": 2,  # one from the study page, one by retention (not counted twice)
        "instances_added": 4,
        "instances_deleted": 6,
        "dicomweb_requests": 3,  # successful retrievals, the HEAD one included
        "dicomweb_bytes_served": 1500,  # a HEAD sends no body; the failure sent nothing
        "job_seconds": 270,  # runs that finished in the day, the failed one included
    }
    assert record.job_minutes == 4.5
    assert connection.schema_name == "public"
    beta_record = usage_record_compute(tenant=beta, day=DAY)
    assert (beta_record.studies_added, beta_record.instances_added) == (1, 7)
    assert (beta_record.dicomweb_bytes_served, beta_record.instances_deleted) == (77777, 70)
    assert (beta_record.bytes_total, beta_record.job_seconds) == (999999, 3600)


def test_recomputing_replaces_the_row_and_keeps_a_closed_days_storage(alpha):
    medium_bytes(alpha, default=100)
    first = usage_record_compute(tenant=alpha, day=DAY)
    study_on(alpha, at(DAY, 8), instances=2)
    medium_bytes(alpha, default=5000)

    again = usage_record_compute(tenant=alpha, day=DAY)

    assert UsageRecord.objects.filter(tenant=alpha, day=DAY).count() == 1
    assert again.pk == first.pk and again.computed_at > first.computed_at
    assert (again.studies_added, again.instances_added) == (1, 2)
    # The day ended before it was first computed: its storage figure is not re-measured.
    assert again.bytes_by_medium == {"default": 100} and again.bytes_total == 100


def test_a_running_day_takes_the_latest_storage_measurement(alpha):
    today = utc_today()
    medium_bytes(alpha, default=100)
    usage_record_compute(tenant=alpha, day=today)
    medium_bytes(alpha, default=5000)
    assert usage_record_compute(tenant=alpha, day=today).bytes_total == 5000
    with pytest.raises(ValueError, match="has not begun"):
        usage_record_compute(tenant=alpha, day=today + timedelta(days=1))


def test_the_meter_computes_every_active_and_suspended_tenant_once_per_hour(
    alpha, beta, new_tenant
):
    Tenant.objects.filter(slug__in=TWINS).update(created_at=timezone.now() - timedelta(days=10))
    paused = new_tenant("meter-paused").tenant
    services.tenant_suspend(tenant=paused, actor="ops")
    gone = new_tenant("meter-gone").tenant
    services.tenant_delete(tenant=gone, actor="ops", confirm_slug=gone.slug)
    broken = new_tenant("meter-broken").tenant
    with owner_role(), connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {broken.schema_name}.jobs_jobrun CASCADE")
    metered = Tenant.objects.filter(status__in=["active", "suspended"]).exclude(
        schema_name="public"
    )
    today, yesterday = utc_today(), utc_today() - timedelta(days=1)

    counts = meter_usage.apply(kwargs={"period": "p-usage-1"}).get()

    days = set(UsageRecord.objects.values_list("tenant__slug", "day"))
    assert {("alpha", today), ("alpha", yesterday), ("beta", today), ("beta", yesterday)} <= days
    # A meter that never ran for alpha's ten days fills every one of them, not just yesterday.
    assert {("alpha", today - timedelta(days=n)) for n in range(11)} <= days
    assert ("meter-paused", today) in days  # suspended: its storage is still billed
    assert ("meter-paused", yesterday) not in days  # it did not exist yet
    assert not {slug for slug, _day in days} & {"meter-gone", "meter-broken"}
    assert counts["failed"] == 1 and counts["tenants"] == metered.count()
    run = JobRun.objects.get(job="usage-metering", period="p-usage-1")
    assert run.status == JobStatus.SUCCEEDED and run.counts == counts
    assert meter_usage.apply(kwargs={"period": "p-usage-1"}).get() is None  # a second beat
    # Yesterday is final now; the next hour computes today only.
    later = meter_usage.apply(kwargs={"period": "p-usage-2"}).get()
    assert later["computed"] == metered.count() - 1


@pytest.fixture
def records(alpha, beta) -> None:
    """Exactly these records (rolled back after the test): tests that commit, such as the
    browser's usage flow, leave the records of their purged tenants behind, as billing must."""
    UsageRecord.objects.all().delete()
    today = utc_today()
    for tenant, day, stored, served in (
        (alpha, today, 3000, 400),
        (alpha, today - timedelta(days=2), 2000, 100),
        (beta, today, 5000, 777777),
        (alpha, today - timedelta(days=45), 1, 1),  # outside the dashboard's 30 days
    ):
        UsageRecord.objects.create(
            tenant=tenant,
            day=day,
            bytes_by_medium={"default": stored},
            bytes_total=stored,
            instances_added=3,
            dicomweb_requests=served // 100 or 1,
            dicomweb_bytes_served=served,
            job_seconds=90,
            computed_at=timezone.now(),
        )


def chart_bars(page: str, key: str) -> dict[str, str]:
    """data-day -> data-value of the bars in the chart with id `key`."""
    import re

    chart = page[page.index(f'id="{key}"') :]
    chart = chart[: chart.index("</svg>")]
    return dict(re.findall(r'data-day="([0-9-]+)" data-value="([0-9]+)"', chart))


def test_the_fleet_dashboard_charts_the_last_30_days_and_lists_each_tenant(
    superadmin_client, records, django_assert_max_num_queries
):
    today, two_days_ago = utc_today(), utc_today() - timedelta(days=2)
    with django_assert_max_num_queries(32):
        page = superadmin_client.get("/tenants/").content.decode()

    stored = chart_bars(page, "usage-bytes_total")
    assert len(stored) == 30 and min(stored) == (today - timedelta(days=29)).isoformat()
    assert stored[today.isoformat()] == "8000"  # the fleet: alpha and beta
    assert stored[two_days_ago.isoformat()] == "2000"
    assert stored[(today - timedelta(days=1)).isoformat()] == "0"
    assert chart_bars(page, "usage-dicomweb_bytes_served")[today.isoformat()] == "778177"
    assert page.count('<svg class="usage-chart-svg"') == 3
    table = page[page.index('class="data usage-totals"') :]
    assert 'href="/tenants/alpha/usage/"' in table and 'href="/tenants/beta/usage/"' in table
    assert "/tenants/usage.csv?from=" in page


def test_a_tenants_usage_page_shows_its_days_and_nobody_elses(superadmin_client, records):
    page = superadmin_client.get("/tenants/alpha/usage/").content.decode()

    assert chart_bars(page, "usage-bytes_total")[utc_today().isoformat()] == "3000"
    rows = page[page.index('class="data usage-days-table"') :]
    assert rows.count("<tr>") == 1 + 2  # header and alpha's two days within the window
    assert "777" not in rows and "7777" not in page  # beta's figures
    assert "tenant=alpha" in page


def test_the_usage_page_shows_the_days_asked_for_with_a_readable_scale(superadmin_client, records):
    today = utc_today()
    first, last = today - timedelta(days=50), today - timedelta(days=40)
    page = superadmin_client.get(
        "/tenants/alpha/usage/", {"from": first.isoformat(), "to": last.isoformat()}
    ).content.decode()
    bars = chart_bars(page, "usage-bytes_total")
    assert min(bars) == first.isoformat() and max(bars) == last.isoformat() and len(bars) == 11
    assert bars[(today - timedelta(days=45)).isoformat()] == "1"  # the record 45 days ago
    assert f'value="{first.isoformat()}"' in page  # the form shows the window
    chart = page[page.index('id="usage-bytes_total"') :]
    chart = chart[: chart.index("</svg>")]
    assert chart.count('class="scale"') == 3 and 'class="day"' in chart  # a scale and days
    for bad, said in (
        ({"from": "yesterday"}, "is a day as YYYY-MM-DD"),
        ({"from": last.isoformat(), "to": first.isoformat()}, "“to” is before “from”"),
        ({"from": "2020-01-01", "to": "2022-01-01"}, "at most 366 days"),
    ):
        answer = superadmin_client.get("/tenants/alpha/usage/", bad)
        text = answer.content.decode()
        assert answer.status_code == 200 and said in text and "The last 30 days are shown" in text
        assert len(chart_bars(text, "usage-bytes_total")) == 30


def parsed(response) -> list[list[str]]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_the_csv_has_one_row_per_tenant_and_day_and_filters(superadmin_client, records, alpha):
    today = utc_today()
    every = parsed(superadmin_client.get("/tenants/usage.csv"))
    header = every[0]
    assert header[:4] == ["day", "tenant", "tenant_name", "bytes_total"]
    assert {"job_seconds", "dicomweb_bytes_served", "instances_deleted"} <= set(header)
    assert [(row[0], row[1]) for row in every[1:]] == [
        ((today - timedelta(days=45)).isoformat(), "alpha"),
        ((today - timedelta(days=2)).isoformat(), "alpha"),
        (today.isoformat(), "alpha"),
        (today.isoformat(), "beta"),
    ]
    row = dict(zip(header, every[-1], strict=True))
    assert row["dicomweb_bytes_served"] == "777777" and row["bytes_by_medium"] == (
        '{"default": 5000}'
    )

    window = f"from={(today - timedelta(days=2)).isoformat()}&to={today.isoformat()}"
    only_alpha = parsed(superadmin_client.get(f"/tenants/usage.csv?{window}&tenant=alpha"))
    assert [(row[0], row[1]) for row in only_alpha[1:]] == [
        ((today - timedelta(days=2)).isoformat(), "alpha"),
        (today.isoformat(), "alpha"),
    ]
    last_day = parsed(superadmin_client.get(f"/tenants/usage.csv?from={today.isoformat()}"))
    assert len(last_day) == 3

    for query in (
        "from=yesterday",
        "from=2026-13-01",
        "tenant=nobody",
        "from=2026-02-02&to=2026-02-01",
    ):
        refused = superadmin_client.get(f"/tenants/usage.csv?{query}")
        assert refused.status_code == 400, query


@pytest.mark.parametrize(
    "name",
    ['=HYPERLINK("http://x")', "+1", "-2+3", "@SUM(A1)", '\t=HYPERLINK("x")', "\r=1+1"],
)
def test_csv_cells_cannot_become_formulas(superadmin_client, records, alpha, name):
    Tenant.objects.filter(pk=alpha.pk).update(name=name)
    rows = parsed(superadmin_client.get("/tenants/usage.csv?tenant=alpha"))
    assert {row[2] for row in rows[1:]} == {"'" + name}


def test_only_super_admins_reach_usage_and_tenant_sites_do_not_route_there(
    db, make_user, alpha, alpha_admin_client, records
):
    anonymous = Client(HTTP_HOST="localhost")
    for path in ("/tenants/usage.csv", "/tenants/alpha/usage/"):
        response = anonymous.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/account/login/")
    plain = logged_in(Client(HTTP_HOST="localhost"), make_user(None, username="plain").username)
    assert plain.get("/tenants/usage.csv").status_code == 403
    assert plain.get("/tenants/alpha/usage/").status_code == 403
    # On a tenant's host the platform's URLs do not exist, logged in or not.
    assert alpha_admin_client.get("/tenants/usage.csv").status_code == 404
    assert alpha_admin_client.get("/tenants/alpha/usage/").status_code == 404
    assert tenant_client(alpha).get("/tenants/usage.csv").status_code == 404


def test_dicomweb_bytes_are_what_the_retrieve_views_sent(alpha, alpha_admin_client, storage):  # noqa: F811
    with schema_context(alpha.schema_name):
        job = ingest(distinct_instances(["CT_small.dcm"]))
        assert job.stored == 1
        instance = Instance.objects.select_related("series__study").get()
    uids = (
        instance.series.study.study_instance_uid,
        instance.series.series_instance_uid,
        instance.sop_instance_uid,
    )
    path = "/dicom-web/studies/{}/series/{}/instances/{}".format(*uids)
    wado_uri = "/dicom-web/wado?requestType=WADO&studyUID={}&seriesUID={}&objectUID={}".format(
        *uids
    )

    def body(response) -> bytes:  # type: ignore[no-untyped-def]
        assert response.status_code == 200, response.content[:500]
        if response.streaming:
            return b"".join(response.streaming_content)
        return response.content

    sent = [
        body(alpha_admin_client.get(path, HTTP_ACCEPT="application/dicom")),
        body(alpha_admin_client.get(path + "/metadata")),
        body(alpha_admin_client.get(path + "/rendered", HTTP_ACCEPT="image/png")),
        body(alpha_admin_client.get(wado_uri + "&contentType=image/png")),
        body(alpha_admin_client.get(wado_uri + "&contentType=application/dicom")),
    ]
    alpha_admin_client.head(path, HTTP_ACCEPT="application/dicom")

    record = usage_record_compute(tenant=alpha, day=utc_today())

    assert record.dicomweb_requests == 6
    assert record.dicomweb_bytes_served == sum(len(piece) for piece in sent)
    assert (record.studies_added, record.instances_added) == (1, 1)
    assert record.bytes_total == instance.size_bytes == len(sent[0])


def test_the_api_lists_the_records_to_super_admins_only(superadmin, make_user, records, alpha):
    from accounts.services import api_token_create

    _token, raw = api_token_create(user=superadmin, name="billing")
    client = Client(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {raw}")
    today = utc_today().isoformat()

    body = client.get(f"/api/v1/usage/?tenant=alpha&from={today}").json()
    assert body["count"] == 1
    assert body["results"][0] | {"computed_at": None} == {
        "tenant": "alpha",
        "day": today,
        "bytes_by_medium": {"default": 3000},
        "bytes_total": 3000,
        "studies_added": 0,
        "studies_deleted": 0,
        "instances_added": 3,
        "instances_deleted": 0,
        "dicomweb_requests": 4,
        "dicomweb_bytes_served": 400,
        "job_seconds": 90,
        "job_minutes": 1.5,
        "computed_at": None,
    }
    assert client.get("/api/v1/usage/").json()["count"] == 4
    assert client.get("/api/v1/usage/?from=soon").status_code == 400
    plain = make_user(None, username="plain")
    _token, plain_raw = api_token_create(user=plain, name="nosy")
    nosy = Client(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {plain_raw}")
    assert nosy.get("/api/v1/usage/").status_code == 403
    alpha_user = make_user(alpha, username="alpha-billing")
    with schema_context(alpha.schema_name):
        _token, tenant_raw = api_token_create(user=alpha_user, name="tenant")
    on_tenant = tenant_client(alpha, HTTP_AUTHORIZATION=f"Bearer {tenant_raw}")
    assert on_tenant.get("/api/v1/usage/").status_code == 404
