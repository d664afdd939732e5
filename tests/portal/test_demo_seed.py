"""`manage.py demo_seed` sends synthetic studies through the real ingest pipeline, once."""

import io

import pytest
from django.core.management import call_command
from django.test import override_settings
from django_tenants.utils import tenant_context

from configuration.models import RemoteNode
from configuration.selectors import node_may_query
from studies.models import IngestJob, IngestJobStatus, Instance, Study
from tenants.models import Tenant


@pytest.fixture
def seeded(db, monkeypatch):
    monkeypatch.setenv("PORTAL_DEMO_PASSWORD", "demo-password-for-tests")

    def seed() -> str:
        out = io.StringIO()
        with override_settings(DEBUG=True):
            call_command("demo_seed", stdout=out)
        return out.getvalue()

    return seed


def test_demo_tenants_get_distinct_synthetic_studies_once(seeded):
    first = seeded()
    assert "acme         received 13 demo images" in first
    studies = {}
    for slug in ("acme", "globex"):
        with tenant_context(Tenant.objects.get(slug=slug)):
            job = IngestJob.objects.get()
            assert (job.status, job.rejected) == (IngestJobStatus.DONE, 0)
            studies[slug] = {
                (s.patient_name, tuple(s.modalities), s.num_series, s.num_instances)
                for s in Study.objects.all()
            }
            assert Instance.objects.filter(rows=64, columns=64).count() == job.stored
    assert ("DOE^JANE", ("CT",), 2, 7) in studies["acme"]
    assert len(studies["globex"]) == 3 and not {s[0] for s in studies["acme"]} & {
        s[0] for s in studies["globex"]
    }
    second = seeded()
    assert "received" not in second
    with tenant_context(Tenant.objects.get(slug="acme")):
        assert IngestJob.objects.count() == 1 and Study.objects.count() == 2
        # The README's findscu / getscu / movescu examples: DCMTK's titles, listed once.
        for title in ("FINDSCU", "GETSCU", "MOVESCU"):
            assert node_may_query(calling_ae=title, address="127.0.0.1")
        assert not node_may_query(calling_ae="FINDSCU", address="192.0.2.7")
        assert RemoteNode.objects.count() == 3
