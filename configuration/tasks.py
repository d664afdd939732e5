"""The periodic C-ECHO of each tenant's remote nodes (their status on the settings page)."""

from typing import Any

from celery import shared_task

from jobs.runs import periodic_job
from jobs.tasks import TenantScopedTask


@shared_task(base=TenantScopedTask, name="configuration.echo_nodes")
def echo_nodes(period: str) -> dict[str, Any] | None:
    """Test every remote node of the current tenant; a run is kept when there are nodes."""
    from configuration.models import RemoteNode
    from configuration.services import nodes_echo
    from portal.schemas import current_tenant

    if not RemoteNode.objects.exists():
        return None
    return periodic_job("node-echo", period, lambda: nodes_echo(tenant=current_tenant()))
