"""/jobs/: who sees ingest jobs and periodic runs, filters, isolation, and retries."""

import io

import pytest
from django_tenants.utils import schema_context

from accounts.models import Role
from audit.models import AuditEvent
from jobs.models import JobRun, JobStatus
from jobs.runs import job_run
from studies.ingest import ingest_item_stage, ingest_job_create, ingest_job_submit
from studies.models import IngestItem, IngestJob, IngestJobStatus, ItemOutcome, Study
from tests.conftest import logged_in, tenant_client
from tests.studies.conftest import storage  # noqa: F401  (the fixture: files cleaned up)
from tests.studies.maintenance.test_maintenance import new_study


def client_for(make_user, tenant, role):
    user = make_user(tenant, role=role)
    return logged_in(tenant_client(tenant), user.username)


def add_run(tenant, job="verification", period="2026-11-23T00:00", **fields):
    with schema_context(tenant.schema_name):
        return JobRun.objects.create(job=job, period=period, **fields)


def audits(tenant, action):
    with schema_context(tenant.schema_name):
        return AuditEvent.objects.filter(action=action).count()


@pytest.mark.parametrize("role", [Role.ADMIN, Role.OPERATOR])
def test_admins_and_operators_see_ingest_jobs_and_runs_of_their_tenant_only(
    make_user, alpha, beta, role
):
    with schema_context(alpha.schema_name):
        IngestJob.objects.create(source="rest", description="alpha delivery", total=4, stored=2)
    with schema_context(beta.schema_name):
        IngestJob.objects.create(source="rest", description="beta delivery")
    add_run(alpha, job="retention", counts={"deleted": 7, "media": {"default": {}}})
    add_run(beta, job="beta-only-job", status=JobStatus.FAILED, error="beta secret")
    client = client_for(make_user, alpha, role)

    page = client.get("/jobs/").content.decode()
    assert "alpha delivery" in page and "beta delivery" not in page
    assert 'value="50"' in page  # the progress bar: 2 of 4 processed
    runs = client.get("/jobs/?kind=periodic").content.decode()
    assert "retention" in runs and "deleted: 7" in runs
    assert "beta-only-job" not in runs and "beta secret" not in runs


def test_filters_by_status(alpha_admin_client, alpha):
    add_run(alpha, job="verification", period="p-failed", status=JobStatus.FAILED, error="disk")
    add_run(alpha, job="verification", period="p-ok", status=JobStatus.SUCCEEDED)
    page = alpha_admin_client.get("/jobs/?kind=periodic&status=failed").content.decode()
    assert "p-failed" in page and "p-ok" not in page
    empty = alpha_admin_client.get("/jobs/?kind=ingest&status=failed").content.decode()
    assert "No ingest jobs match" in empty


def test_lists_are_paginated(alpha_admin_client, alpha):
    for index in range(30):
        add_run(alpha, period=f"p{index:02}", status=JobStatus.FAILED)
    first = alpha_admin_client.get("/jobs/?kind=periodic&status=failed")
    assert first.context["paginator"].count == 30 and len(first.context["jobs"]) == 25
    assert "status=failed&amp;page=2" in first.content.decode()  # the filter is kept
    second = alpha_admin_client.get("/jobs/?kind=periodic&status=failed&page=2")
    assert len(second.context["jobs"]) == 5


@pytest.mark.parametrize("role", [Role.VIEWER, Role.AUDITOR])
def test_other_roles_may_not_see_or_retry(make_user, alpha, role):
    run = add_run(alpha, status=JobStatus.FAILED, error="disk gone")
    client = client_for(make_user, alpha, role)
    assert client.get("/jobs/").status_code == 403
    assert client.post(f"/jobs/runs/{run.pk}/retry/").status_code == 403
    assert audits(alpha, "job.retry") == 0
    with schema_context(alpha.schema_name):
        assert JobRun.objects.get(pk=run.pk).status == JobStatus.FAILED


def test_anonymous_users_are_sent_to_the_login_page(alpha):
    response = tenant_client(alpha).get("/jobs/")
    assert response.status_code == 302 and "/account/login/" in response["Location"]


def test_retry_queues_a_failed_run_again_and_audits_it(
    make_user, alpha, django_capture_on_commit_callbacks
):
    run = add_run(alpha, status=JobStatus.FAILED, error="disk gone")
    client = client_for(make_user, alpha, Role.OPERATOR)
    assert f'action="/jobs/runs/{run.pk}/retry/"' in client.get("/jobs/?kind=periodic").text
    # The task is queued once the retry committed; captured here instead of sent.
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = client.post(f"/jobs/runs/{run.pk}/retry/", follow=True)
    assert "queued again" in response.content.decode() and len(queued) == 1
    assert audits(alpha, "job.retry") == 1
    with schema_context(alpha.schema_name), job_run(run.job, run.period) as counts:
        assert counts is not None  # what the queued task does: it may claim the run again


def test_only_failed_runs_can_be_retried(alpha_admin_client, alpha):
    run = add_run(alpha, status=JobStatus.SUCCEEDED)
    response = alpha_admin_client.post(f"/jobs/runs/{run.pk}/retry/", follow=True)
    assert "Only failed runs can be retried" in response.content.decode()
    assert audits(alpha, "job.retry") == 0


def test_another_tenants_run_cannot_be_retried(alpha_admin_client, alpha, beta):
    run = add_run(beta, status=JobStatus.FAILED, period="beta-period")
    with schema_context(alpha.schema_name):
        JobRun.objects.filter(pk=run.pk).delete()  # the same id must not exist in alpha
    assert alpha_admin_client.post(f"/jobs/runs/{run.pk}/retry/").status_code == 404
    assert audits(beta, "job.retry") == 0 and audits(alpha, "job.retry") == 0


@pytest.mark.usefixtures("storage")
def test_retry_of_an_ingest_job_refused_for_quota_stores_its_files(
    make_user, alpha, django_capture_on_commit_callbacks
):
    with schema_context(alpha.schema_name):
        job = ingest_job_create(source="upload")
        ingest_item_stage(job=job, name="ct.dcm", stream=io.BytesIO(new_study()))
        # The quota is used up while the file waits: refused when indexed, kept for a retry.
        alpha.quota_bytes = 100
        alpha.save(update_fields=["quota_bytes"])
        job = ingest_job_submit(job=job, run_now=True)
    assert job.status == IngestJobStatus.FAILED and job.rejected == 1
    alpha.quota_bytes = 1 << 30
    alpha.save(update_fields=["quota_bytes"])
    client = client_for(make_user, alpha, Role.OPERATOR)
    assert f'action="/jobs/ingest/{job.pk}/retry/"' in client.get("/jobs/").text

    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(f"/jobs/ingest/{job.pk}/retry/", follow=True)

    assert "1 file queued again" in response.content.decode()
    assert audits(alpha, "ingest.retry") == 1
    with schema_context(alpha.schema_name):
        item = IngestItem.objects.get(job=job)
        assert item.outcome == ItemOutcome.PENDING and not item.quarantine_path
        job = ingest_job_submit(job=IngestJob.objects.get(pk=job.pk), run_now=True)
        assert job.status == IngestJobStatus.DONE and (job.stored, job.rejected) == (1, 0)
        assert Study.objects.count() == 1


@pytest.mark.usefixtures("storage")
def test_retry_of_an_ingest_job_with_nothing_to_retry_says_so(alpha_admin_client, alpha):
    with schema_context(alpha.schema_name):
        job = ingest_job_create(source="upload")
        ingest_item_stage(job=job, name="x.txt", stream=io.BytesIO(b"not dicom"))
        job = ingest_job_submit(job=job, run_now=True)
    # The list does not offer what cannot work, and says why.
    listing = alpha_admin_client.get("/jobs/").content.decode()
    assert f'action="/jobs/ingest/{job.pk}/retry/"' not in listing
    assert "Refused for their content" in listing
    response = alpha_admin_client.post(f"/jobs/ingest/{job.pk}/retry/", follow=True)
    assert "Nothing to retry" in response.content.decode()
    assert audits(alpha, "ingest.retry") == 0
    with schema_context(alpha.schema_name):
        assert IngestJob.objects.get(pk=job.pk).status == IngestJobStatus.FAILED
