"""Each remote node's status: a C-ECHO every quarter of an hour by the `node-echo` job, and
when the gateway last admitted an association from it; per tenant, switchable."""

from datetime import timedelta

from django.utils import timezone
from django_tenants.utils import schema_context

from audit.models import AuditEvent
from configuration.models import RemoteNode, TenantSettings
from configuration.selectors import tenant_settings
from configuration.tasks import echo_nodes
from dicomnet.gateway import association_check
from jobs.models import JobRun
from tests.configuration.conftest import add_node
from tests.configuration.test_echo import free_port, storescp  # noqa: F401  (fixture)


def test_the_job_echoes_every_node_and_audits_only_changes(alpha, beta, storescp):  # noqa: F811
    up = add_node(alpha, ae_title="ECHOSCP", host="127.0.0.1", port=storescp)
    down = add_node(alpha, ae_title="GONE", host="127.0.0.1", port=free_port())
    theirs = add_node(beta, ae_title="ECHOSCP", host="127.0.0.1", port=storescp)
    with schema_context(alpha.schema_name):
        RemoteNode.objects.filter(pk=down.pk).update(last_echo_ok=True)  # it answered before
        counts = echo_nodes.apply(kwargs={"period": "p-echo-1"}).get()
        assert counts == {"nodes": 2, "answered": 1, "failed": 1}
        assert RemoteNode.objects.get(pk=up.pk).last_echo_ok is True
        assert RemoteNode.objects.get(pk=down.pk).last_echo_ok is False
        changed = AuditEvent.objects.filter(action="node.status")
        assert [(e.object_id, e.outcome) for e in changed] == [(str(down.pk), "failure")]
        assert JobRun.objects.filter(job="node-echo", period="p-echo-1").exists()
        assert echo_nodes.apply(kwargs={"period": "p-echo-1"}).get() is None  # once a period
    with schema_context(beta.schema_name):  # another tenant's nodes are its own job's
        assert RemoteNode.objects.get(pk=theirs.pk).last_echo_at is None


def test_the_job_can_be_switched_off(alpha, storescp):  # noqa: F811
    node = add_node(alpha, ae_title="ECHOSCP", host="127.0.0.1", port=storescp)
    with schema_context(alpha.schema_name):
        tenant_settings()  # the row exists once anything has read it
        TenantSettings.objects.update(job_node_echo=False)
        assert echo_nodes.apply(kwargs={"period": "p-echo-2"}).get() is None
        assert RemoteNode.objects.get(pk=node.pk).last_echo_at is None


def test_an_admitted_association_is_the_nodes_last_association(alpha, alpha_admin_client):
    node = add_node(alpha, ae_title="CT1", host="127.0.0.1", port=104)
    other = add_node(alpha, ae_title="MR1", host="127.0.0.1", port=104)
    admission, refusal = association_check(
        called_ae=alpha.ae_title, calling_ae="CT1", address="127.0.0.1"
    )
    assert admission is not None and refusal is None
    with schema_context(alpha.schema_name):
        seen = RemoteNode.objects.get(pk=node.pk).last_association_at
        assert seen is not None and timezone.now() - seen < timedelta(seconds=30)
        assert RemoteNode.objects.get(pk=other.pk).last_association_at is None
    page = alpha_admin_client.get("/settings/").content.decode()
    assert "Last association" in page
