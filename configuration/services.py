"""Every write of the tenant's configuration: validated, versioned field by field, audited."""

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.http import HttpRequest
from django.utils import timezone
from django_ratelimit.core import get_usage

from accounts.models import User
from audit.models import Outcome
from audit.services import audit_record
from configuration import egress
from configuration.dicom import EchoResult, echo
from configuration.models import RemoteNode, RetentionRule, SettingChange, TenantSettings
from configuration.selectors import calling_ae_title, retention_preview, tenant_settings
from configuration.validators import certificate_fingerprint
from tenants.models import Tenant
from tenants.services import tenant_update

SETTINGS_FIELDS = (
    "accent_colour",
    "timezone",
    "duplicate_policy",
    "patient_mismatch_policy",
    "cors_origins",
    "viewer_url_template",
    "require_known_nodes",
    "query_retrieve_from_any_node",
    "require_admin_2fa",
    "job_storage_usage",
    "job_watermark_migration",
    "job_retention",
    "job_verification",
    "job_quarantine_purge",
    "job_node_echo",
)
# Identity lives on the tenant's public row; the API and forms call the name `display_name`.
IDENTITY_FIELDS = {"display_name": "name"}
# C-ECHOs one tenant may send per minute: enough to test every node after a change, too few
# to sweep addresses with the button.
ECHO_RATE = "20/m"
ECHO_RATE_GROUP = "node-echo"
NODE_FIELDS = ("ae_title", "host", "port", "description", "tls_certificate_sha256")
RULE_FIELDS = ("modality", "days", "enabled")
SHORT_RETENTION_DAYS = 30
SHORT_RETENTION_MESSAGE = (
    f"A rule keeping studies less than {SHORT_RETENTION_DAYS} days deletes recent studies; "
    "tick “I understand” to save it."
)
AE_TITLE_PLATFORM = (
    "The AE title routes DICOM traffic to this archive: only the platform administrator changes it."
)

Changes = dict[str, tuple[Any, Any]]


def settings_update(
    *, tenant: Tenant, actor: User, request: HttpRequest | None = None, **values: Any
) -> TenantSettings:
    """Change any of SETTINGS_FIELDS and the display name at once (the AE title is the
    platform's to change: `tenants.services.tenant_update`).

    Nothing is saved unless every value is valid; the tenant object passed in shows the new
    identity afterwards.
    """
    unknown = set(values) - set(SETTINGS_FIELDS) - set(IDENTITY_FIELDS) - {"ae_title"}
    if unknown:
        raise TypeError(f"Unknown settings: {', '.join(sorted(unknown))}")
    values = _normalised_settings(values)
    # Shown with the settings and accepted unchanged, so a client may send back what it read.
    if "ae_title" in values and values.pop("ae_title") != tenant.ae_title:
        raise ValidationError({"ae_title": [AE_TITLE_PLATFORM]})
    tenant_settings()  # the row to lock must exist
    with transaction.atomic():
        row = TenantSettings.objects.select_for_update().get()
        identity = Tenant.all_objects.select_for_update().get(pk=tenant.pk)
        changes: Changes = {}
        for field in SETTINGS_FIELDS:
            if field in values and getattr(row, field) != values[field]:
                changes[field] = (getattr(row, field), values[field])
                setattr(row, field, values[field])
        identity_changes = _identity_changes(identity, values)
        errors = _identity_errors(identity, identity_changes)
        try:
            row.full_clean()
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                errors.setdefault(field, []).extend(messages)
        if errors:
            raise ValidationError(errors)
        changes.update(identity_changes)
        if not changes:
            return row
        row.save()
        if identity_changes:
            tenant_update(
                tenant=identity,
                actor=f"{actor.get_username()}@{tenant.slug}",
                **{IDENTITY_FIELDS[key]: new for key, (_, new) in identity_changes.items()},
            )
        _record_changes(actor=actor, subject="settings", subject_id=None, changes=changes)
        if changes.get("require_admin_2fa") == (False, True):
            from accounts.services import admin_full_tokens_revoke

            admin_full_tokens_revoke(request=request)
        audit_record(
            action="settings.update",
            request=request,
            actor=actor,
            object_type="settings",
            details={"changes": {field: list(pair) for field, pair in changes.items()}},
        )
    tenant.name, tenant.ae_title = identity.name, identity.ae_title
    return row


def _normalised_settings(values: dict[str, Any]) -> dict[str, Any]:
    """Spelling that does not change meaning: spaces around names, case of colours and origins."""
    values = dict(values)
    for key in ("display_name", "ae_title", "timezone"):
        if isinstance(values.get(key), str):
            values[key] = values[key].strip()
    if "ae_title" in values:
        values["ae_title"] = values["ae_title"] or None  # the column's "none": NULL, not ""
    if isinstance(values.get("accent_colour"), str):
        values["accent_colour"] = values["accent_colour"].strip().lower()
    if isinstance(values.get("cors_origins"), list):
        values["cors_origins"] = [
            o.strip().lower() if isinstance(o, str) else o for o in values["cors_origins"]
        ]
    return values


def _identity_changes(identity: Tenant, values: dict[str, Any]) -> Changes:
    return {
        key: (getattr(identity, attribute), values[key])
        for key, attribute in IDENTITY_FIELDS.items()
        if key in values and getattr(identity, attribute) != values[key]
    }


def _identity_errors(identity: Tenant, changes: Changes) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    if "display_name" in changes:
        name = changes["display_name"][1]
        if not name:
            errors["display_name"] = ["Enter the name shown in the header of every page."]
        elif len(name) > 200:
            errors["display_name"] = ["Use at most 200 characters."]
    return errors


def node_create(
    *,
    actor: User,
    request: HttpRequest | None = None,
    ae_title: str,
    host: str,
    port: int,
    description: str = "",
    tls_certificate_sha256: str = "",
) -> RemoteNode:
    """List a remote DICOM node (modality, workstation, other archive)."""
    node = RemoteNode(
        **_normalised_node(
            ae_title=ae_title,
            host=host,
            port=port,
            tls_certificate_sha256=tls_certificate_sha256,
        )
    )
    node.description = description.strip()
    node.full_clean()
    _check_egress(node.host)
    with _unique_violations_as({"__all__": _duplicate_node_message()}), transaction.atomic():
        node.save()
        _record_changes(
            actor=actor,
            subject="node",
            subject_id=node.pk,
            label=str(node),
            changes={field: (None, getattr(node, field)) for field in NODE_FIELDS},
        )
        audit_record(
            action="node.create",
            request=request,
            actor=actor,
            target=node,
            details={field: getattr(node, field) for field in NODE_FIELDS},
        )
    return node


def node_update(
    *, node: RemoteNode, actor: User, request: HttpRequest | None = None, **values: Any
) -> RemoteNode:
    """Change a node's address or description; a new address forgets the last echo status."""
    unknown = set(values) - set(NODE_FIELDS)
    if unknown:
        raise TypeError(f"Unknown node fields: {', '.join(sorted(unknown))}")
    values = _normalised_node(**values)
    if isinstance(values.get("description"), str):
        values["description"] = values["description"].strip()
    with _unique_violations_as({"__all__": _duplicate_node_message()}), transaction.atomic():
        locked = RemoteNode.objects.select_for_update().get(pk=node.pk)
        changes = _apply(locked, values)
        locked.full_clean()
        if not changes:
            return locked
        if "host" in changes:
            _check_egress(locked.host)
        if changes.keys() & {"ae_title", "host", "port", "tls_certificate_sha256"}:
            locked.last_echo_at, locked.last_echo_ok, locked.last_echo_message = None, None, ""
        locked.save()
        _record_changes(
            actor=actor, subject="node", subject_id=locked.pk, label=str(locked), changes=changes
        )
        audit_record(
            action="node.update",
            request=request,
            actor=actor,
            target=locked,
            details={"changes": {field: list(pair) for field, pair in changes.items()}},
        )
    return locked


def node_delete(*, node: RemoteNode, actor: User, request: HttpRequest | None = None) -> None:
    """Remove a node from the list (with `require_known_nodes`, it can no longer send)."""
    _versioned_delete(
        RemoteNode,
        node,
        NODE_FIELDS,
        subject="node",
        action="node.delete",
        actor=actor,
        request=request,
    )


class EchoLimited(Exception):
    """The tenant sent ECHO_RATE C-ECHOs this minute already."""

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(f"Too many C-ECHO tests this minute; try again in {retry_after} s.")


def node_echo(
    *,
    node: RemoteNode,
    tenant: Tenant,
    actor: User,
    request: HttpRequest | None = None,
    timeout: float = 5,
) -> EchoResult:
    """C-ECHO the node as this tenant's AE title and keep the answer as its last status.

    From a request, at most ECHO_RATE per tenant (EchoLimited past it)."""
    if request is not None:
        usage = get_usage(
            request,
            group=ECHO_RATE_GROUP,
            key=lambda group, request: tenant.schema_name,
            rate=ECHO_RATE,
            increment=True,
        )
        if usage is not None and usage["should_limit"]:
            raise EchoLimited(max(1, int(usage["time_left"])))
    calling_ae = calling_ae_title(tenant)
    # The network round trip happens outside any transaction: it may take `timeout` seconds.
    result = _echo_and_keep(node, calling_ae=calling_ae, timeout=timeout)
    with transaction.atomic():
        audit_record(
            action="node.echo",
            request=request,
            actor=actor,
            target=node,
            outcome=Outcome.SUCCESS if result.ok else Outcome.FAILURE,
            details={
                "calling_ae": calling_ae,
                "called": str(node),
                "message": result.message,
                "rtt_ms": result.rtt_ms,
            },
        )
    return result


def node_problems(*, node: RemoteNode | None, values: dict[str, Any], skip: Iterable[str]) -> None:
    """What node_create/node_update would refuse in `values`, without saving anything, for
    a form whose `skip` fields are already wrong: its page then shows every problem at once.
    Raises ValidationError (field -> messages); the skipped fields are left out."""
    skipped = set(skip)
    candidate = RemoteNode(**{f: getattr(node, f) for f in NODE_FIELDS} if node else {})
    if node is not None:
        candidate.pk = node.pk
    for field, value in _normalised_node(**dict(values)).items():
        if field in NODE_FIELDS and field not in skipped:
            setattr(candidate, field, value)
    errors: dict[str, list[str]] = {}
    try:
        candidate.full_clean(exclude=list(skipped), validate_constraints=not skipped)
    except ValidationError as error:
        errors.update(error.message_dict)
    if "host" not in skipped and "host" not in errors and candidate.host:
        try:
            _check_egress(candidate.host)
        except ValidationError as error:
            errors.update(error.message_dict)
    errors = {field: messages for field, messages in errors.items() if field not in skipped}
    if errors:
        raise ValidationError(errors)


def _check_egress(host: str) -> None:
    """A node the archive could never connect to is refused before it is listed."""
    try:
        egress.check_host(host)
    except egress.AddressRefused as refusal:
        raise ValidationError({"host": str(refusal)}, code="address_refused") from None


def _normalised_node(**values: Any) -> dict[str, Any]:
    if isinstance(values.get("ae_title"), str):
        values["ae_title"] = values["ae_title"].strip()
    if isinstance(values.get("host"), str):
        values["host"] = values["host"].strip().lower()
    if isinstance(values.get("tls_certificate_sha256"), str):
        values["tls_certificate_sha256"] = certificate_fingerprint(values["tls_certificate_sha256"])
    return values


def _duplicate_node_message() -> str:
    return str(RemoteNode._meta.constraints[0].violation_error_message or "")


def retention_rule_create(
    *,
    actor: User,
    request: HttpRequest | None = None,
    modality: str,
    days: int,
    enabled: bool = True,
    confirm_short: bool = False,
) -> RetentionRule:
    """A rule that deletes studies of `modality` received more than `days` ago, nightly."""
    rule = RetentionRule(modality=modality.strip(), days=days, enabled=enabled)
    _validate_rule(rule, confirm_short=confirm_short)
    unique = {"modality": str(RetentionRule._meta.get_field("modality").error_messages["unique"])}
    with _unique_violations_as(unique), transaction.atomic():
        rule.save()
        _record_changes(
            actor=actor,
            subject="retention rule",
            subject_id=rule.pk,
            label=str(rule),
            changes={field: (None, getattr(rule, field)) for field in RULE_FIELDS},
        )
        audit_record(
            action="retention.create",
            request=request,
            actor=actor,
            target=rule,
            details=_rule_details(rule),
        )
    return rule


def retention_rule_update(
    *,
    rule: RetentionRule,
    actor: User,
    request: HttpRequest | None = None,
    confirm_short: bool = False,
    **values: Any,
) -> RetentionRule:
    """Change a rule's modality, days or whether it is enabled."""
    unknown = set(values) - set(RULE_FIELDS)
    if unknown:
        raise TypeError(f"Unknown rule fields: {', '.join(sorted(unknown))}")
    if isinstance(values.get("modality"), str):
        values["modality"] = values["modality"].strip()
    unique = {"modality": str(RetentionRule._meta.get_field("modality").error_messages["unique"])}
    with _unique_violations_as(unique), transaction.atomic():
        locked = RetentionRule.objects.select_for_update().get(pk=rule.pk)
        changes = _apply(locked, values)
        if not changes:
            return locked
        _validate_rule(locked, confirm_short=confirm_short)
        locked.save()
        _record_changes(
            actor=actor,
            subject="retention rule",
            subject_id=locked.pk,
            label=str(locked),
            changes=changes,
        )
        audit_record(
            action="retention.update",
            request=request,
            actor=actor,
            target=locked,
            details={
                "changes": {field: list(pair) for field, pair in changes.items()},
                **_rule_details(locked),
            },
        )
    return locked


def retention_rule_delete(
    *, rule: RetentionRule, actor: User, request: HttpRequest | None = None
) -> None:
    _versioned_delete(
        RetentionRule,
        rule,
        RULE_FIELDS,
        subject="retention rule",
        action="retention.delete",
        actor=actor,
        request=request,
    )


def _versioned_delete(
    model: Any,
    obj: Any,
    fields: Any,
    *,
    subject: str,
    action: str,
    actor: User,
    request: HttpRequest | None,
) -> None:
    """Delete a row under lock, recording every field's last value and one audit row."""
    with transaction.atomic():
        locked = model.objects.select_for_update().get(pk=obj.pk)
        _record_changes(
            actor=actor,
            subject=subject,
            subject_id=locked.pk,
            label=str(locked),
            changes={field: (getattr(locked, field), None) for field in fields},
        )
        audit_record(
            action=action,
            request=request,
            actor=actor,
            target=locked,
            details={field: getattr(locked, field) for field in fields},
        )
        locked.delete()


def _validate_rule(rule: RetentionRule, *, confirm_short: bool) -> None:
    errors: dict[str, list[str]] = {}
    try:
        rule.full_clean()
    except ValidationError as exc:
        errors = exc.message_dict
    if not errors and rule.days < SHORT_RETENTION_DAYS and not confirm_short:
        errors["confirm_short"] = [SHORT_RETENTION_MESSAGE]
    if errors:
        raise ValidationError(errors)


def _rule_details(rule: RetentionRule) -> dict[str, Any]:
    """The rule and what it would delete as saved: the audit row keeps what the admin saw."""
    preview = retention_preview(modality=rule.modality, days=rule.days)
    return {
        "modality": rule.modality,
        "days": rule.days,
        "enabled": rule.enabled,
        "would_delete_studies": preview.studies,
        "would_delete_bytes": preview.bytes,
    }


def _apply(instance: Any, values: dict[str, Any]) -> Changes:
    """Set the values that differ on `instance`; return them as (old, new) by field."""
    changes: Changes = {}
    for field, value in values.items():
        if getattr(instance, field) != value:
            changes[field] = (getattr(instance, field), value)
            setattr(instance, field, value)
    return changes


def _record_changes(
    *, actor: User, subject: str, subject_id: int | None, changes: Changes, label: str = ""
) -> None:
    SettingChange.objects.bulk_create(
        SettingChange(
            actor=actor,
            actor_name=actor.get_username(),
            subject=subject,
            subject_id=subject_id,
            subject_label=label[:100],
            field=field,
            old_value=old,
            new_value=new,
        )
        for field, (old, new) in changes.items()
    )


@contextmanager
def _unique_violations_as(errors: dict[str, str]) -> Iterator[None]:
    """A concurrent save that beat our check trips the unique index; answer as the check does."""
    try:
        yield
    except IntegrityError as exc:
        if getattr(exc.__cause__, "sqlstate", None) != "23505":  # unique_violation
            raise
        raise ValidationError(errors) from exc


# -- node status: the periodic C-ECHO and the last association ---------------------------------

NODE_ECHO_LIMIT = 100  # nodes per run, those tested longest ago first
NODE_SEEN_EVERY = timedelta(minutes=1)


def nodes_echo(*, tenant: Tenant, timeout: float = 5) -> dict[str, int]:
    """C-ECHO the tenant's nodes (the `node-echo` job) and keep each answer as the node's
    status. Only a change of a node's state (answering, not answering) is audited."""
    counts = {"nodes": 0, "answered": 0, "failed": 0}
    calling_ae = calling_ae_title(tenant)
    nodes = RemoteNode.objects.order_by(F("last_echo_at").asc(nulls_first=True), "pk")
    for node in nodes[:NODE_ECHO_LIMIT]:
        before = node.last_echo_ok
        result = _echo_and_keep(node, calling_ae=calling_ae, timeout=timeout)
        counts["nodes"] += 1
        counts["answered" if result.ok else "failed"] += 1
        if before is not None and before != result.ok:
            audit_record(
                action="node.status",
                actor_name="node-echo job",
                target=node,
                outcome=Outcome.SUCCESS if result.ok else Outcome.FAILURE,
                details={"answered": result.ok, "message": result.message[:200]},
            )
    return counts


def _echo_and_keep(node: RemoteNode, *, calling_ae: str, timeout: float) -> EchoResult:
    """C-ECHO the node and keep the answer as its status (on the object and its row)."""
    result = echo(
        calling_ae=calling_ae,
        ae_title=node.ae_title,
        host=node.host,
        port=node.port,
        timeout=timeout,
    )
    node.last_echo_at = timezone.now()
    node.last_echo_ok = result.ok
    node.last_echo_message = result.message[:500]
    RemoteNode.objects.filter(pk=node.pk).update(
        last_echo_at=node.last_echo_at,
        last_echo_ok=node.last_echo_ok,
        last_echo_message=node.last_echo_message,
    )
    return result


def node_seen(*, calling_ae: str) -> None:
    """The gateway admitted an association from the node(s) with this AE title: note when,
    at most once a minute per node (one small UPDATE that usually matches nothing)."""
    now = timezone.now()
    RemoteNode.objects.filter(ae_title=calling_ae.strip()).filter(
        Q(last_association_at__isnull=True) | Q(last_association_at__lt=now - NODE_SEEN_EVERY)
    ).update(last_association_at=now)
