"""Fixtures for storage media: a small quota with room to spare, and directories cleaned up."""

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django_tenants.utils import schema_context

from audit.models import AuditEvent
from studies.media import services
from studies.models import StorageMedium
from tenants.models import Tenant

GIB = 1 << 30


def _entries(root: Path) -> set[Path]:
    return set(root.iterdir()) if root.is_dir() else set()


@pytest.fixture
def storage(alpha, beta) -> Iterator[Path]:
    """alpha's allowed root; alpha's quota is 10 GiB and its default medium takes 4 GiB.

    Whatever a test leaves in alpha's or beta's storage root (or in their default media) is
    removed afterwards: the database rolls back, the disk does not.
    """
    roots = [Path(t.storage_root) for t in (alpha, beta)]
    roots += [root / "default" for root in roots]
    before = {root: _entries(root) for root in roots}
    alpha.quota_bytes = 10 * GIB
    alpha.save(update_fields=["quota_bytes"])
    with schema_context(alpha.schema_name):
        StorageMedium.objects.filter(name="default").update(capacity_bytes=4 * GIB)
    yield Path(alpha.storage_root)
    for root in roots:
        for entry in _entries(root) - before[root]:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


@pytest.fixture
def add_medium(storage, alpha) -> Callable[..., StorageMedium]:
    """Create a medium of alpha through the service (1 GiB, below alpha's root by default)."""

    def add(name: str, root: str | None = None, tenant: Tenant | None = None, **kwargs: object):
        tenant = tenant or alpha
        with schema_context(tenant.schema_name):
            return services.medium_create(
                tenant=tenant,
                name=name,
                root=root or name,
                capacity_bytes=kwargs.pop("capacity_bytes", GIB),
                **kwargs,
            )

    return add


def audit_actions(tenant: Tenant, prefix: str = "medium.") -> list[str]:
    with schema_context(tenant.schema_name):
        return list(
            AuditEvent.objects.filter(action__startswith=prefix)
            .order_by("id")
            .values_list("action", flat=True)
        )


def media_state(tenant: Tenant) -> list[tuple]:
    """Everything a forbidden or refused request must leave untouched."""
    with schema_context(tenant.schema_name):
        return list(
            StorageMedium.objects.order_by("pk").values_list(
                "pk",
                "name",
                "root",
                "status",
                "capacity_bytes",
                "high_watermark",
                "low_watermark",
                "priority",
                "last_probe_at",
            )
        )
