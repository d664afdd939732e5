"""Every write on tenants: create, update, suspend, resume, delete, restore, purge, domains.

Each function runs in one transaction and records a TenantEvent, so the lifecycle of every
tenant can be read back from its history.
"""

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import DatabaseError, transaction
from django.db.models import Q
from django.utils import timezone
from django_tenants.utils import schema_context, schema_exists

from accounts.models import Role, User
from accounts.selectors import active_user_count
from accounts.services import (
    mail_link_after_commit,
    set_password_link_expiry,
    user_create,
    user_set_password_path,
)
from audit.services import audit_record
from studies.models import StorageMedium
from studies.storage import StoragePathError, resolve_inside
from tenants import provisioning
from tenants.links import tenant_url
from tenants.models import Domain, Tenant, TenantEvent, TenantStatus
from tenants.selectors import ae_title_holder
from tenants.validators import schema_name_for, validate_custom_domain, validate_slug

logger = logging.getLogger(__name__)

# Which status each lifecycle action may start from.
_TRANSITIONS: dict[str, tuple[set[str], str]] = {
    "suspend": ({TenantStatus.ACTIVE}, TenantStatus.SUSPENDED),
    "resume": ({TenantStatus.SUSPENDED}, TenantStatus.ACTIVE),
    "delete": ({TenantStatus.ACTIVE, TenantStatus.SUSPENDED}, TenantStatus.DELETED),
    "restore": ({TenantStatus.DELETED}, TenantStatus.SUSPENDED),
    "purge": ({TenantStatus.DELETED}, TenantStatus.PURGED),
}


class TenantLifecycleError(Exception):
    """An action that the tenant's current status does not allow."""


@dataclass(frozen=True)
class TenantCreation:
    tenant: Tenant
    admin: User
    set_password_url: str
    method: str  # "clone" or "migrate"
    expires_at: datetime | None = None  # when the set-password link stops working


def _record(
    tenant: Tenant, action: str, actor: str, *, from_status: str = "", **details: object
) -> None:
    TenantEvent.objects.create(
        tenant=tenant,
        action=action,
        actor=actor,
        from_status=from_status,
        to_status=tenant.status,
        details=details,
    )


def default_storage_root(slug: str) -> Path:
    return Path(settings.PORTAL_STORAGE_ROOT) / slug


def tenant_rules_check(tenant: Tenant, *, existing: bool) -> None:
    """The rules every tenant row obeys, for creation and every later edit alike, all
    reported at once: its storage root lies inside the platform's and overlaps no other
    tenant's (nor, once it exists, leaves out one of its media), its quotas are positive and
    the user quota holds its active users. Resolves `tenant.storage_root` in place."""
    errors: dict[str, list[str]] = {}
    try:
        tenant.full_clean(exclude=["storage_root"])
    except ValidationError as exc:
        errors.update(exc.message_dict)
    platform = Path(settings.PORTAL_STORAGE_ROOT).resolve()
    try:
        root = resolve_inside(platform, tenant.storage_root)
    except StoragePathError:
        errors["storage_root"] = [f"The storage root must lie inside {platform}."]
    else:
        tenant.storage_root = str(root)
        problem = _storage_root_problem(tenant, root, platform, existing=existing)
        if problem:
            errors["storage_root"] = [problem]
    if tenant.ae_title and "ae_title" not in errors:
        holder = ae_title_holder(tenant.ae_title, besides=tenant)
        if holder is not None:
            errors["ae_title"] = [
                f"Tenant {holder.slug} uses or used the AE title {tenant.ae_title} (in any "
                "case); a title never passes to another tenant, so modalities configured for "
                "it cannot reach the wrong archive."
            ]
    if tenant.quota_users < 1:
        errors.setdefault("quota_users", []).append("A tenant needs room for at least 1 user.")
    elif existing:
        with schema_context(tenant.schema_name):
            active = active_user_count()
        if tenant.quota_users < active:
            errors.setdefault("quota_users", []).append(
                f"{tenant.name} has {active} active users; deactivate some before lowering "
                f"the quota below {active}."
            )
    if errors:
        raise ValidationError(errors)


def _storage_root_problem(tenant: Tenant, root: Path, platform: Path, *, existing: bool) -> str:
    if root == platform:
        return "A tenant needs its own directory, not the whole storage root."
    # Another live tenant's root at this one, above it or below it: either would let a purge
    # or an export of one reach the other's files.
    others = (
        Tenant.objects.exclude(pk=tenant.pk)
        .exclude(schema_name="public")
        .filter(
            Q(storage_root__in=[str(root), *map(str, root.parents)])
            | Q(storage_root__startswith=f"{root}/")
        )
    )
    other = others.order_by("slug").first()
    if other is not None:
        return (
            f"{root} overlaps the storage root of tenant {other.slug} ({other.storage_root}); "
            "each tenant needs a directory of its own."
        )
    if existing:
        with schema_context(tenant.schema_name):
            media = list(StorageMedium.objects.order_by("name").values_list("name", "root"))
        for name, medium_root in media:
            if not Path(medium_root).resolve().is_relative_to(root):
                return f"Medium “{name}” ({medium_root}) would lie outside {root}; move it first."
    return ""


def tenant_create(
    *,
    slug: str,
    name: str,
    admin_email: str,
    created_by: str,
    admin_username: str = "admin",
    admin_password: str | None = None,
    ae_title: str | None = None,
    quota_bytes: int | None = None,
    quota_users: int | None = None,
    storage_root: str | None = None,
) -> TenantCreation:
    """Provision a tenant: row, domain, schema, admin, default medium and its directory.

    All or nothing: the schema is created inside the same transaction as the rows, and the
    storage directory is removed again if the transaction does not commit.
    """
    checks: list[tuple[str, Callable[[str], None], str]] = [
        ("slug", validate_slug, slug),
        ("admin_email", validate_email, admin_email),
    ]
    for field, validator, value in checks:
        try:
            validator(value)
        except ValidationError as error:
            raise ValidationError({field: error.error_list}) from None
    tenant = Tenant(
        slug=slug,
        name=name,
        schema_name=schema_name_for(slug),
        ae_title=ae_title or None,
        quota_bytes=quota_bytes or settings.PORTAL_DEFAULT_QUOTA_BYTES,
        quota_users=quota_users or settings.PORTAL_DEFAULT_QUOTA_USERS,
        storage_root=storage_root or str(default_storage_root(slug)),
        status=TenantStatus.PROVISIONING,
    )
    tenant_rules_check(tenant, existing=False)
    root = Path(tenant.storage_root)
    domain = Domain(domain=f"{slug}.{settings.PORTAL_BASE_DOMAIN}", tenant=tenant, is_primary=True)
    domain.full_clean(exclude=["tenant"])
    if root.exists() and any(root.iterdir()):
        raise ValidationError(
            {"storage_root": f"{root} already holds files; choose an empty or new directory."}
        )

    created_dir = not root.exists()
    try:
        with transaction.atomic():
            tenant.save()
            domain.tenant = tenant
            domain.save()
            _record(tenant, "create", created_by, name=name, admin_email=admin_email)
            method = provisioning.schema_create(tenant.schema_name)
            medium_root = root / "default"
            medium_root.mkdir(parents=True, exist_ok=True)
            with schema_context(tenant.schema_name):
                admin = user_create(
                    username=admin_username,
                    email=admin_email,
                    role=Role.ADMIN,
                    password=admin_password,
                )
                StorageMedium.objects.create(
                    name="default",
                    root=str(medium_root),
                    capacity_bytes=tenant.quota_bytes,
                )
                set_password_path = user_set_password_path(user=admin)
                url = tenant_url(tenant, set_password_path)
                if admin_password is None:
                    mail_link_after_commit(
                        tenant=tenant,
                        user=admin,
                        url=url,
                        invitation=True,
                        opening=f"The tenant {tenant.name} was created with you as its admin "
                        f"({admin.username}).",
                    )
            tenant.status = TenantStatus.ACTIVE
            tenant.save(update_fields=["status"])
            _record(
                tenant,
                "activate",
                "system",
                from_status=TenantStatus.PROVISIONING,
                provisioning=method,
            )
    except BaseException:
        if created_dir:
            shutil.rmtree(root, ignore_errors=True)
        raise
    logger.info("tenant %s created by %s (%s)", slug, created_by, method)
    _figures_of(tenant)
    return TenantCreation(
        tenant=tenant,
        admin=admin,
        method=method,
        set_password_url=url,
        expires_at=set_password_link_expiry(),
    )


@dataclass
class AdminLink:
    user: User
    url: str
    expires_at: datetime


def tenant_admin_link(*, tenant: Tenant, actor: str, username: str = "") -> AdminLink:
    """Issue (and e-mail) a new set-password link for one of the tenant's admins: the
    super-admin's way back in when the first link expired or was lost. The admin's current
    password keeps working until it is set anew. Recorded in the tenant's history and audit."""
    if tenant.status not in (TenantStatus.ACTIVE, TenantStatus.SUSPENDED):
        raise ValidationError(f"{tenant.slug} is {tenant.status}: it has no admin to reach.")
    with schema_context(tenant.schema_name):
        admins = User.objects.filter(role=Role.ADMIN, is_active=True).order_by("pk")
        admin = admins.filter(username=username).first() if username else admins.first()
        if admin is None:
            raise ValidationError(
                f"{tenant.slug} has no active admin named {username}."
                if username
                else f"{tenant.slug} has no active admin."
            )
        url = tenant_url(tenant, user_set_password_path(user=admin))
        with transaction.atomic():
            audit_record(
                action="user.set_password_link",
                actor_name=f"platform: {actor}",
                target=admin,
                details={"issued_by": actor, "emailed_to": admin.email},
            )
            mail_link_after_commit(
                tenant=tenant,
                user=admin,
                url=url,
                invitation=False,
                opening=f"The platform's administrators issued a new link to set the password "
                f"of your account at {tenant.name} ({admin.username}).",
            )
    with transaction.atomic():
        _record(tenant, "admin-link", actor, username=admin.username)
    return AdminLink(user=admin, url=url, expires_at=set_password_link_expiry())


def tenant_update(
    *,
    tenant: Tenant,
    actor: str,
    name: str | None = None,
    quota_bytes: int | None = None,
    quota_users: int | None = None,
    storage_root: str | None = None,
    ae_title: str | None = None,
) -> Tenant:
    """Change a tenant's display name, quotas, AE title or allowed storage root."""
    changes: dict[str, list[object]] = {}
    new_values = {
        "name": name,
        "quota_bytes": quota_bytes,
        "quota_users": quota_users,
        "ae_title": ae_title,
    }
    if storage_root is not None:
        new_values["storage_root"] = storage_root
    before = {field: getattr(tenant, field) for field in new_values}
    for field, value in new_values.items():
        if value is not None:
            setattr(tenant, field, value)
    try:
        tenant_rules_check(tenant, existing=True)
    except ValidationError:
        for field, value in before.items():  # the caller's object stays as it was
            setattr(tenant, field, value)
        raise
    for field, value in before.items():
        if getattr(tenant, field) != value:
            changes[field] = [value, getattr(tenant, field)]
    if not changes:
        return tenant
    with transaction.atomic():
        tenant.save(update_fields=list(changes))
        _record(tenant, "update", actor, from_status=tenant.status, changes=changes)
    return tenant


def _transition(tenant: Tenant, action: str, actor: str, **details: object) -> Tenant:
    allowed_from, to_status = _TRANSITIONS[action]
    with transaction.atomic():
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        if locked.status not in allowed_from:
            raise TenantLifecycleError(
                f"Cannot {action} tenant “{locked.slug}” while it is {locked.get_status_display()}."
            )
        from_status = locked.status
        locked.status = to_status
        if action == "delete":
            locked.deleted_at = timezone.now()
            locked.purge_after = locked.deleted_at + timedelta(
                days=settings.PORTAL_TENANT_GRACE_DAYS
            )
        elif action == "restore":
            locked.deleted_at = locked.purge_after = None
        locked.save()
        _record(locked, action, actor, from_status=from_status, **details)
    tenant.refresh_from_db()
    _figures_of(tenant)
    return tenant


def _figures_of(tenant: Tenant) -> None:
    """The fleet's row of `tenant`, measured again after a change (tenants/figures.py); the
    periodic pass catches up if this fails."""
    from tenants.figures import figures_refresh_tenant

    try:
        with transaction.atomic():
            figures_refresh_tenant(tenant)
    except DatabaseError:
        logger.exception("fleet figures of %s not refreshed", tenant.slug)


def tenant_suspend(*, tenant: Tenant, actor: str, reason: str = "") -> Tenant:
    """Block the tenant's site, API and DICOM services; its data stays untouched."""
    return _transition(tenant, "suspend", actor, reason=reason)


def tenant_resume(*, tenant: Tenant, actor: str) -> Tenant:
    return _transition(tenant, "resume", actor)


def tenant_delete(*, tenant: Tenant, actor: str, confirm_slug: str) -> Tenant:
    """Mark for deletion. Data is kept for the grace period, then the purge job drops it."""
    if confirm_slug != tenant.slug:
        raise ValidationError({"confirm_slug": f"Type “{tenant.slug}” to confirm the deletion."})
    return _transition(tenant, "delete", actor)


def tenant_restore(*, tenant: Tenant, actor: str) -> Tenant:
    """Undo a deletion during the grace period; the tenant comes back suspended."""
    return _transition(tenant, "restore", actor)


def tenant_purge(*, tenant: Tenant, actor: str = "system") -> Tenant:
    """Drop the schema and the files of a deleted tenant. The row stays as a record."""
    root = Path(tenant.storage_root)
    # Never remove anything outside the storage root, whatever the row says.
    root = resolve_inside(settings.PORTAL_STORAGE_ROOT, root)
    buckets = _object_stores(tenant)  # their rows go with the schema
    with transaction.atomic():
        tenant = _transition(
            tenant, "purge", actor, schema=tenant.schema_name, storage_root=str(root)
        )
        Domain.objects.filter(tenant=tenant).delete()
        provisioning.schema_drop(tenant.schema_name)
    # Files go after the commit: a failed transaction must not lose data.
    if root != Path(settings.PORTAL_STORAGE_ROOT).resolve():
        shutil.rmtree(root, ignore_errors=True)
    for store in buckets:
        try:
            store.delete_all()
        except OSError:
            logger.exception("objects of purged tenant %s left in %s", tenant.slug, store.bucket)
    return tenant


def _object_stores(tenant: Tenant) -> list[Any]:
    """The object storage media of a tenant whose schema still exists, ready to empty."""
    from studies.media.objectstore import ObjectStore
    from studies.models import MediumKind

    if not schema_exists(tenant.schema_name):
        return []
    stores = []
    with schema_context(tenant.schema_name):
        for medium in StorageMedium.objects.filter(kind=MediumKind.S3):
            try:
                stores.append(ObjectStore(medium))
            except OSError:
                logger.exception("objects of medium %s cannot be reached", medium.name)
    return stores


def tenants_due_for_purge() -> list[Tenant]:
    return list(Tenant.objects.filter(status=TenantStatus.DELETED, purge_after__lte=timezone.now()))


def domain_add(*, tenant: Tenant, domain: str, actor: str) -> Domain:
    """Route an extra (custom) host name to the tenant."""
    row = Domain(tenant=tenant, domain=domain.strip().lower().rstrip("."), is_primary=False)
    validate_custom_domain(row.domain)
    row.full_clean()
    with transaction.atomic():
        row.save()
        _record(tenant, "domain-add", actor, from_status=tenant.status, domain=row.domain)
    return row


def domain_remove(*, domain: Domain, actor: str) -> None:
    if domain.is_primary:
        raise ValidationError("The primary domain cannot be removed.")
    with transaction.atomic():
        domain.delete()
        _record(
            domain.tenant,
            "domain-remove",
            actor,
            from_status=domain.tenant.status,
            domain=domain.domain,
        )
