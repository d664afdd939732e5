"""The periodic purge: only tenants past their grace period, recorded as a job run."""

from datetime import timedelta

from django.utils import timezone
from django_tenants.utils import schema_exists

from jobs.models import JobRun, JobStatus
from tenants import services
from tenants.models import Tenant, TenantStatus
from tenants.tasks import purge_deleted_tenants


def test_purge_job_drops_only_tenants_past_their_grace_period(new_tenant):
    due = new_tenant("due-now").tenant
    waiting = new_tenant("still-kept").tenant
    for tenant in (due, waiting):
        services.tenant_delete(tenant=tenant, actor="ops", confirm_slug=tenant.slug)
    Tenant.objects.filter(pk=due.pk).update(purge_after=timezone.now() - timedelta(minutes=1))

    counts = purge_deleted_tenants.apply(kwargs={"period": "p-test"}).get()

    assert counts == {"purged": 1}
    assert Tenant.all_objects.get(pk=due.pk).status == TenantStatus.PURGED
    assert not schema_exists(due.schema_name)
    assert Tenant.objects.get(pk=waiting.pk).status == TenantStatus.DELETED
    assert schema_exists(waiting.schema_name)
    run = JobRun.objects.get(job="tenant-purge", period="p-test")
    assert run.status == JobStatus.SUCCEEDED and run.counts == {"purged": 1}
    # The same period again (a second beat): nothing runs twice.
    assert purge_deleted_tenants.apply(kwargs={"period": "p-test"}).get() is None
