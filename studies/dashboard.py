"""The tenant site's home page: archive counts, media usage, ingest activity, alerts, jobs."""

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.mixins import LoginRequiredMixin
from django.views.generic import TemplateView

from jobs.models import JobRun, JobStatus
from studies.index import selectors as index_selectors
from studies.media import selectors as media_selectors
from studies.models import IngestJob, MediumStatus, StorageMedium


class DashboardView(LoginRequiredMixin, TemplateView):
    template_name = "studies/dashboard.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        tenant = self.request.tenant  # type: ignore[attr-defined]
        media = list(StorageMedium.objects.exclude(status=MediumStatus.RETIRED))
        summary = media_selectors.storage_summary(quota_bytes=tenant.quota_bytes)
        users = get_user_model().objects.filter(is_active=True)
        return super().get_context_data(
            media=media,
            summary=summary,
            used_bytes=summary.used_bytes,
            capacity_bytes=summary.capacity_bytes,
            user_count=users.count(),
            roles=users.values_list("role", flat=True),
            failed_jobs=JobRun.objects.filter(status=JobStatus.FAILED).count(),
            recent_runs=JobRun.objects.all()[:5],
            alerts=[m for m in media if m.status == MediumStatus.ONLINE and m.above_high_watermark],
            archive=index_selectors.archive_counts(),
            activity=index_selectors.ingest_activity(days=14),
            recent_ingests=IngestJob.objects.all()[:5],
            **kwargs,
        )
