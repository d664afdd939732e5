"""/jobs/: what the workers did for this tenant."""

from typing import Any

from django.views.generic import TemplateView

from accounts.permissions import Capability, CapabilityRequiredMixin
from jobs.models import JobRun
from studies.models import IngestJob


class JobListView(CapabilityRequiredMixin, TemplateView):
    capability = Capability.JOBS_VIEW
    template_name = "jobs/job_list.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return super().get_context_data(
            ingest_jobs=IngestJob.objects.all()[:50], runs=JobRun.objects.all()[:50], **kwargs
        )
