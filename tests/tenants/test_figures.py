"""The fleet pass: every tenant's figures kept in one table, measured oldest first, at once
after a change to a tenant, and never counted per request."""

from datetime import timedelta

from django.utils import timezone
from django_tenants.utils import schema_context

from jobs.models import JobRun, JobStatus
from portal.celery import app
from tenants import figures
from tenants.figures import due_tenants, figures_refresh
from tenants.models import FleetFigures, Tenant, TenantStatus
from tenants.services import tenant_delete, tenant_suspend


def test_a_new_tenant_is_measured_at_once_and_its_changes_at_the_next_pass(new_tenant):
    tenant = new_tenant("measured-one").tenant
    row = FleetFigures.objects.get(tenant=tenant)
    assert (row.users, row.media, row.missing_migrations, row.error) == (1, 1, 0, "")
    assert row.migrations_digest == figures.migrations_digest()
    assert [m["probe"] for m in row.media_detail] == [None]  # its medium was writable
    assert tenant not in due_tenants()
    with schema_context(tenant.schema_name):
        JobRun.objects.create(job="retention", period="2026-01-01T00:00", status=JobStatus.FAILED)
    assert FleetFigures.objects.get(tenant=tenant).failed_jobs == 0  # not counted per request
    FleetFigures.objects.filter(tenant=tenant).update(
        measured_at=timezone.now() - timedelta(minutes=5)
    )
    assert tenant in due_tenants()
    assert figures_refresh() >= 1
    assert FleetFigures.objects.get(tenant=tenant).failed_jobs == 1


def test_the_oldest_go_first_and_new_migrations_make_every_row_due(new_tenant, monkeypatch):
    first = new_tenant("older-one").tenant
    second = new_tenant("newer-one").tenant
    long_ago = timezone.now() - timedelta(hours=1)
    FleetFigures.objects.filter(tenant=second).update(measured_at=long_ago)
    FleetFigures.objects.filter(tenant=first).update(measured_at=long_ago - timedelta(hours=1))
    due = list(due_tenants())
    assert due.index(first) < due.index(second)
    assert figures_refresh(tenants=[]) == 0
    # A release with another migration: what was counted says nothing any more.
    figures.migrations_digest.cache_clear()
    monkeypatch.setattr(figures, "migrations_digest", lambda: "another-release")
    assert {first, second} <= set(due_tenants(stale_after=3600 * 24))
    # ...and the fan-out checks those tenants in their schemas instead.
    from tenants.selectors import schedulable_tenants

    assert first in schedulable_tenants()


def test_status_changes_follow_and_a_deleted_tenant_leaves_the_table(new_tenant):
    tenant = new_tenant("leaving-one").tenant
    tenant = tenant_suspend(tenant=tenant, actor="test")
    assert FleetFigures.objects.filter(tenant=tenant).exists()
    tenant = tenant_delete(tenant=tenant, actor="test", confirm_slug=tenant.slug)
    assert tenant.status == TenantStatus.DELETED
    assert not FleetFigures.objects.filter(tenant=tenant).exists()
    assert tenant not in due_tenants()


def test_the_singleton_runs_the_pass_every_minute(db):
    entry = app.conf.beat_schedule["fleet-figures"]
    assert entry["task"] == "tenants.refresh_fleet_figures" and entry["schedule"] == 60.0
    assert Tenant.objects.exists()


def test_a_tenant_without_figures_is_unmeasured_not_needing_attention(new_tenant):
    from tenants.selectors import fleet, fleet_attention

    tenant = new_tenant("unmeasured-one").tenant
    before = fleet_attention()
    FleetFigures.objects.filter(tenant=tenant).delete()
    assert fleet_attention() == before
    assert tenant in fleet(flag="unmeasured") and tenant not in fleet(flag="attention")
    assert tenant not in fleet(flag="behind")
