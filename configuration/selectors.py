"""Reads of the tenant's configuration, for pages, the API, jobs and the DICOM gateway."""

import ipaddress
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.apps import apps
from django.db.models import Count, QuerySet, Sum
from django.utils import timezone

from configuration.dicom import DEFAULT_CALLING_AE
from configuration.models import (
    DEFAULT_ACCENT,
    SINGLETON_ID,
    RemoteNode,
    RetentionRule,
    SettingChange,
    TenantSettings,
)
from configuration.validators import ALL_MODALITIES
from portal.units import size_text
from tenants.models import Tenant

# Periodic job name (jobs.tasks.TENANT_JOBS) -> the TenantSettings switch that gates it.
JOB_SWITCHES = {
    "storage-usage": "job_storage_usage",
    "watermark-migration": "job_watermark_migration",
    "retention": "job_retention",
    "verification": "job_verification",
    "quarantine-purge": "job_quarantine_purge",
    "node-echo": "job_node_echo",
}


def tenant_settings() -> TenantSettings:
    """The active schema's settings row, created with the defaults on first use."""
    row, _ = TenantSettings.objects.get_or_create(pk=SINGLETON_ID)
    return row


def accent_colour() -> str:
    """The header colour, without creating the settings row on a plain page view."""
    stored = TenantSettings.objects.filter(pk=SINGLETON_ID).values_list("accent_colour").first()
    return stored[0] if stored else DEFAULT_ACCENT


def job_enabled(job: str) -> bool:
    """Whether the tenant lets periodic `job` run; unknown jobs are not switchable (on)."""
    switch = JOB_SWITCHES.get(job)
    return switch is None or bool(getattr(tenant_settings(), switch))


def calling_ae_title(tenant: Tenant) -> str:
    """The AE title this archive introduces itself with when it calls a remote node."""
    return tenant.ae_title or DEFAULT_CALLING_AE


def node_list() -> QuerySet[RemoteNode]:
    return RemoteNode.objects.order_by("ae_title", "host", "port")


@dataclass(frozen=True)
class NodeAdmission:
    """What the DICOM gateway lets a peer do: associate (C-ECHO, C-STORE) and query."""

    allowed: bool
    may_query: bool


def node_admission(*, calling_ae: str, address: str, certificate: str = "") -> NodeAdmission:
    """The tenant's answer to `calling_ae` at `address` (`certificate`: the SHA-256 of the
    peer's TLS client certificate, if it showed one), from one read of the settings and at
    most one of the node list: it is asked once per association, before any reply."""
    row = tenant_settings()
    if not row.require_known_nodes and row.query_retrieve_from_any_node:
        return NodeAdmission(allowed=True, may_query=True)
    listed = node_is_listed(calling_ae=calling_ae, address=address, certificate=certificate)
    return NodeAdmission(
        allowed=listed or not row.require_known_nodes,
        may_query=listed or row.query_retrieve_from_any_node,
    )


def node_is_allowed(*, calling_ae: str, address: str, certificate: str = "") -> bool:
    """Whether the DICOM gateway may accept an association from `calling_ae` at `address`."""
    peer = {"calling_ae": calling_ae, "address": address, "certificate": certificate}
    return node_admission(**peer).allowed


def node_is_listed(*, calling_ae: str, address: str, certificate: str = "") -> bool:
    """Whether `calling_ae` at `address` is one of the tenant's remote nodes. A node pinned
    to a TLS client certificate is that node only when the peer presented exactly it."""
    nodes = RemoteNode.objects.filter(ae_title=calling_ae.strip()).values_list(
        "host", "tls_certificate_sha256"
    )
    return any(
        (not pinned or pinned == certificate) and _host_has_address(host, address)
        for host, pinned in nodes
    )


def node_may_query(*, calling_ae: str, address: str, certificate: str = "") -> bool:
    """Whether the gateway answers C-FIND, C-MOVE and C-GET from this peer: listed nodes
    only, unless the tenant opened query/retrieve to any node."""
    peer = {"calling_ae": calling_ae, "address": address, "certificate": certificate}
    return node_admission(**peer).may_query


def _host_has_address(host: str, address: str) -> bool:
    try:
        return ipaddress.ip_address(host) == ipaddress.ip_address(address)
    except ValueError:
        pass
    try:
        # A node listed by name matches the addresses the name resolves to now.
        resolved = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return address in {str(entry[4][0]) for entry in resolved}


def retention_rule_list() -> QuerySet[RetentionRule]:
    return RetentionRule.objects.order_by("modality")


def setting_change_list() -> QuerySet[SettingChange]:
    return SettingChange.objects.order_by("-at", "-id")


@dataclass(frozen=True)
class RetentionPreview:
    """What a retention rule would delete if the job ran now."""

    studies: int
    bytes: int
    cutoff: datetime
    available: bool = True

    @property
    def summary(self) -> str:
        """The dry run's answer in words, as the page and the API say it."""
        if not self.available:
            return "No studies are indexed yet: nothing would be deleted."
        noun = "study" if self.studies == 1 else "studies"
        return (
            f"This rule would delete {self.studies} {noun}, {size_text(self.bytes)} "
            f"({self.bytes} bytes), tonight."
        )


def retention_preview(*, modality: str, days: int) -> RetentionPreview:
    """Studies of `modality` (`*`: any) received before now - `days`, and their size.

    Reads `studies.Study` by name, which the index provides with `received_at` (when the
    archive received the study), `modalities` (an array of the study's modality codes) and
    `size_bytes`. Before the index exists nothing can be deleted, and the preview says so.
    """
    cutoff = timezone.now() - timedelta(days=days)
    try:
        study_model = apps.get_model("studies", "Study")
    except LookupError:
        return RetentionPreview(studies=0, bytes=0, cutoff=cutoff, available=False)
    studies = study_model.objects.filter(received_at__lt=cutoff)
    if modality != ALL_MODALITIES:
        studies = studies.filter(modalities__contains=[modality])
    totals = studies.aggregate(count=Count("pk"), size=Sum("size_bytes"))
    return RetentionPreview(studies=totals["count"] or 0, bytes=totals["size"] or 0, cutoff=cutoff)
