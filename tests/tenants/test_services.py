"""Tenant lifecycle through the services: create, suspend, resume, delete, restore, purge."""

import io
from contextlib import nullcontext
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django_tenants.utils import schema_context, schema_exists

from accounts.models import Role, User
from studies.models import StorageMedium
from tenants import services
from tenants.models import Domain, Tenant, TenantEvent, TenantStatus
from tests.conftest import owner_role


def test_create_provisions_schema_admin_medium_domain_and_directory(new_tenant):
    creation = new_tenant("st-marys", name="St Mary's", admin_email="it@stmarys.example")
    tenant = creation.tenant

    assert tenant.status == TenantStatus.ACTIVE
    assert tenant.schema_name == "t_st_marys"
    assert schema_exists("t_st_marys")
    assert creation.method == "clone"
    assert Domain.objects.get(tenant=tenant).domain == f"st-marys.{settings.PORTAL_BASE_DOMAIN}"
    assert Path(tenant.storage_root) == Path(settings.PORTAL_STORAGE_ROOT).resolve() / "st-marys"
    with schema_context(tenant.schema_name):
        admin = User.objects.get()
        medium = StorageMedium.objects.get()
    assert (admin.username, admin.email, admin.role) == ("admin", "it@stmarys.example", Role.ADMIN)
    assert not admin.has_usable_password()  # the admin chooses it through the link
    assert Path(medium.root).is_dir() and Path(medium.root).parent == Path(tenant.storage_root)
    assert creation.set_password_url.startswith("https://st-marys.localhost/account/set-password/")
    assert [e.action for e in tenant.events.order_by("id")] == ["create", "activate"]


def test_admin_of_new_tenant_is_invisible_from_other_tenants(new_tenant, alpha):
    new_tenant("gamma", admin_email="gamma-admin@example.org")
    with schema_context(alpha.schema_name):
        assert not User.objects.filter(email="gamma-admin@example.org").exists()


@pytest.mark.parametrize(
    ("slug", "code"),
    [
        ("Acme", "uppercase"),
        ("-acme", "invalid"),
        ("acme-", "invalid"),
        ("ac_me", "invalid"),
        ("a" * 33, "too_long"),
        ("public", "reserved"),
        ("www", "reserved"),
        ("admin", "reserved"),
        ("api", "reserved"),
        ("t", "reserved"),
        ("ac--me", "invalid"),
        ("acme/../x", "invalid"),
        ("", "invalid"),
        ("ac me", "invalid"),
        ("acmé", "invalid"),
    ],
)
def test_invalid_slugs_are_rejected_with_a_reason_and_nothing_is_created(new_tenant, slug, code):
    before = Tenant.objects.count()
    with pytest.raises(ValidationError) as raised:
        new_tenant(slug)
    [error] = raised.value.error_dict["slug"]
    assert error.code == code
    assert error.messages[0]  # a sentence a person can act on
    assert Tenant.objects.count() == before
    if slug:
        assert not (Path(settings.PORTAL_STORAGE_ROOT) / slug).exists()


def test_duplicate_slug_and_ae_title_are_refused(new_tenant, alpha):
    with pytest.raises(ValidationError, match="already exists"):
        new_tenant("alpha")
    with pytest.raises(ValidationError, match="AE title"):
        new_tenant("delta", ae_title=alpha.ae_title)
    assert not Tenant.objects.filter(slug="delta").exists()


def test_bad_admin_email_is_refused_before_anything_is_made(new_tenant):
    with pytest.raises(ValidationError) as raised:
        new_tenant("mailless", admin_email="not-an-address")
    assert raised.value.message_dict == {"admin_email": ["Enter a valid email address."]}
    assert not Tenant.objects.filter(slug="mailless").exists()


def test_failure_during_provisioning_leaves_nothing_behind(new_tenant):
    """A leftover schema makes the clone fail after the rows were written: all rolls back."""
    with owner_role(), connection.cursor() as cursor:
        cursor.execute("CREATE SCHEMA t_orphan; CREATE TABLE t_orphan.keep (id int)")
        cursor.execute(
            "GRANT USAGE ON SCHEMA t_orphan TO PUBLIC; GRANT SELECT ON t_orphan.keep TO PUBLIC"
        )
    with pytest.raises(ValidationError, match="already exists"), transaction.atomic():
        new_tenant("orphan")
    assert not Tenant.objects.filter(slug="orphan").exists()
    assert not Domain.objects.filter(domain__startswith="orphan.").exists()
    assert not (Path(settings.PORTAL_STORAGE_ROOT) / "orphan").exists()
    with connection.cursor() as cursor:  # the schema that was there before is untouched
        cursor.execute("SELECT count(*) FROM t_orphan.keep")


def test_storage_root_must_stay_inside_the_platform_root(new_tenant, tmp_path):
    for root in [
        "/etc",
        str(Path(settings.PORTAL_STORAGE_ROOT) / ".." / "escape"),
        str(settings.PORTAL_STORAGE_ROOT),
    ]:
        with pytest.raises(ValidationError) as raised:
            new_tenant("rooted", storage_root=root)
        assert "storage_root" in raised.value.message_dict
    link = Path(settings.PORTAL_STORAGE_ROOT) / "sneaky-link"
    link.symlink_to(tmp_path)
    try:
        with pytest.raises(ValidationError):
            new_tenant("rooted", storage_root=str(link / "x"))
    finally:
        link.unlink()
    assert not Tenant.objects.filter(slug="rooted").exists()


def test_lifecycle_transitions_are_audited(new_tenant):
    tenant = new_tenant("lifecycle").tenant
    services.tenant_suspend(tenant=tenant, actor="ops", reason="unpaid")
    assert tenant.status == TenantStatus.SUSPENDED
    services.tenant_resume(tenant=tenant, actor="ops")
    assert tenant.status == TenantStatus.ACTIVE
    with pytest.raises(ValidationError, match="Type “lifecycle”"):
        services.tenant_delete(tenant=tenant, actor="ops", confirm_slug="lifecycl")
    assert tenant.status == TenantStatus.ACTIVE
    services.tenant_delete(tenant=tenant, actor="ops", confirm_slug="lifecycle")
    assert tenant.status == TenantStatus.DELETED and tenant.purge_after > tenant.deleted_at
    assert schema_exists(tenant.schema_name)  # kept during the grace period
    services.tenant_restore(tenant=tenant, actor="ops")
    assert tenant.status == TenantStatus.SUSPENDED and tenant.purge_after is None

    history = list(
        tenant.events.order_by("id").values_list("action", "from_status", "to_status", "actor")
    )
    assert history[2:] == [
        ("suspend", "active", "suspended", "ops"),
        ("resume", "suspended", "active", "ops"),
        ("delete", "active", "deleted", "ops"),
        ("restore", "deleted", "suspended", "ops"),
    ]


def test_impossible_transitions_are_refused(new_tenant):
    tenant = new_tenant("stuck").tenant
    with pytest.raises(services.TenantLifecycleError, match="Cannot resume"):
        services.tenant_resume(tenant=tenant, actor="ops")
    with pytest.raises(services.TenantLifecycleError, match="Cannot purge"):
        services.tenant_purge(tenant=tenant)
    assert schema_exists(tenant.schema_name)
    assert Tenant.objects.get(pk=tenant.pk).status == TenantStatus.ACTIVE


def test_purge_drops_schema_and_files_but_keeps_the_record(new_tenant):
    tenant = new_tenant("doomed").tenant
    medium_file = Path(tenant.storage_root) / "default" / "1.2.3" / "x.dcm"
    medium_file.parent.mkdir(parents=True)
    medium_file.write_bytes(b"DICM")
    services.tenant_delete(tenant=tenant, actor="ops", confirm_slug="doomed")

    services.tenant_purge(tenant=tenant)

    assert not schema_exists("t_doomed")
    assert not Path(tenant.storage_root).exists()
    assert Tenant.all_objects.get(slug="doomed").status == TenantStatus.PURGED
    assert not Domain.objects.filter(tenant=tenant).exists()
    assert tenant.events.filter(action="purge").exists()


def test_tenant_history_cannot_be_rewritten_in_the_database(alpha):
    """The processes' role has no UPDATE or DELETE on it; the owner is stopped by the trigger."""
    event = TenantEvent.objects.filter(tenant=alpha).first()
    for role, refusal in ((nullcontext(), "permission denied"), (owner_role(), "append-only")):
        with role:
            with pytest.raises(DatabaseError, match=refusal), transaction.atomic():
                TenantEvent.objects.filter(pk=event.pk).update(actor="someone else")
            with pytest.raises(DatabaseError, match=refusal), transaction.atomic():
                TenantEvent.objects.filter(pk=event.pk).delete()
    assert TenantEvent.objects.get(pk=event.pk).actor == event.actor


def test_custom_domains(new_tenant):
    tenant = new_tenant("custom").tenant
    domain = services.domain_add(tenant=tenant, domain="PACS.Custom-Hospital.example.", actor="ops")
    assert domain.domain == "pacs.custom-hospital.example"
    for bad in ["alpha.localhost", "localhost", "not a host", "x"]:
        with pytest.raises(ValidationError):
            services.domain_add(tenant=tenant, domain=bad, actor="ops")
    with pytest.raises(ValidationError):  # already taken
        services.domain_add(tenant=tenant, domain="pacs.custom-hospital.example", actor="ops")
    primary = Domain.objects.get(tenant=tenant, is_primary=True)
    with pytest.raises(ValidationError, match="primary"):
        services.domain_remove(domain=primary, actor="ops")
    services.domain_remove(domain=domain, actor="ops")
    assert list(Domain.objects.filter(tenant=tenant)) == [primary]
    assert connection.schema_name == "public"


def test_edit_applies_every_rule_creation_applies(new_tenant):
    """The edit form once accepted the platform root, another tenant's directory and a user
    quota below the active users: the same rules now hold for both, reported at once."""
    first = new_tenant("rules-a").tenant
    second = new_tenant("rules-b").tenant
    platform = Path(settings.PORTAL_STORAGE_ROOT).resolve()
    for root, says in [
        (str(platform), "not the whole storage root"),
        (first.storage_root, "overlaps the storage root of tenant rules-a"),
        (str(Path(first.storage_root) / "inner"), "overlaps the storage root of tenant rules-a"),
        ("/etc", "must lie inside"),
    ]:
        with pytest.raises(ValidationError) as raised:
            services.tenant_update(
                tenant=second, actor="ops", storage_root=root, quota_users=0, name=""
            )
        errors = raised.value.message_dict
        assert says in " ".join(errors["storage_root"]), root
        assert set(errors) >= {"storage_root", "quota_users", "name"}
    # The caller's object and the row are untouched.
    second.refresh_from_db()
    assert second.storage_root == str(platform / "rules-b") and second.quota_users > 0
    # Below the active users (the admin counts): refused with the count.
    with pytest.raises(ValidationError) as raised:
        services.tenant_update(tenant=second, actor="ops", quota_users=0)
    assert "quota_users" in raised.value.message_dict
    with schema_context(second.schema_name):
        User.objects.create_user(username="second-user", role=Role.VIEWER)
    with pytest.raises(ValidationError, match="has 2 active users"):
        services.tenant_update(tenant=second, actor="ops", quota_users=1)
    # A directory that contains another tenant's is refused at creation too.
    with pytest.raises(ValidationError, match="overlaps the storage root of tenant rules-a"):
        new_tenant("rules-c", storage_root=str(platform / "rules-a" / "nested"))


def test_an_ae_title_is_unique_in_any_case_and_never_passes_on(new_tenant):
    first = new_tenant("titles-a", ae_title="TITLESA").tenant
    with pytest.raises(ValidationError) as raised:
        new_tenant("titles-b", ae_title="titlesa")
    assert "titles-a" in " ".join(raised.value.message_dict["ae_title"])
    second = new_tenant("titles-b", ae_title="TITLESB").tenant
    # The first hospital moves to a new title; the old one stays theirs.
    services.tenant_update(tenant=first, actor="ops", ae_title="TITLESA2")
    with pytest.raises(ValidationError, match="titles-a uses or used"):
        services.tenant_update(tenant=second, actor="ops", ae_title="TitlesA")
    with pytest.raises(ValidationError, match="titles-a uses or used"):
        new_tenant("titles-c", ae_title="TITLESA")
    services.tenant_update(tenant=first, actor="ops", ae_title="TITLESA")  # its own, back
    first.refresh_from_db()
    assert first.ae_title == "TITLESA"
    # Below the services, the database refuses the same title in another case.
    with pytest.raises(DatabaseError), transaction.atomic():
        Tenant.objects.filter(pk=second.pk).update(ae_title="titlesa")


def test_the_platform_moves_a_title_from_the_command_line(new_tenant):
    tenant = new_tenant("titles-cli", ae_title="TITLESCLI").tenant
    out = io.StringIO()
    call_command("tenant", "update", "titles-cli", "--ae-title", "TITLESCLI2", stdout=out)
    tenant.refresh_from_db()
    assert tenant.ae_title == "TITLESCLI2" and "titles-cli: active" in out.getvalue()
    with pytest.raises(CommandError, match="quota_users"):
        call_command("tenant", "update", "titles-cli", "--quota-users", "0", stdout=out)
