"""Tenant site pages about the archive: the dashboard for now."""

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.mixins import LoginRequiredMixin
from django.db.models import Sum
from django.views.generic import TemplateView

from accounts.permissions import Capability, CapabilityRequiredMixin
from jobs.models import JobRun, JobStatus
from studies.models import MediumStatus, StorageMedium


class DashboardView(LoginRequiredMixin, TemplateView):
    template_name = "studies/dashboard.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        media = list(StorageMedium.objects.exclude(status=MediumStatus.RETIRED))
        totals = StorageMedium.objects.aggregate(
            used=Sum("used_bytes"), capacity=Sum("capacity_bytes")
        )
        users = get_user_model().objects.filter(is_active=True)
        return super().get_context_data(
            media=media,
            used_bytes=totals["used"] or 0,
            capacity_bytes=totals["capacity"] or 0,
            user_count=users.count(),
            roles=users.values_list("role", flat=True),
            failed_jobs=JobRun.objects.filter(status=JobStatus.FAILED).count(),
            recent_runs=JobRun.objects.all()[:5],
            alerts=[m for m in media if m.status == MediumStatus.ONLINE and m.above_high_watermark],
            **kwargs,
        )


class StorageView(CapabilityRequiredMixin, TemplateView):
    """The tenant's storage media with their measured usage."""

    capability = Capability.STORAGE_VIEW
    template_name = "studies/storage.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return super().get_context_data(media=StorageMedium.objects.all(), **kwargs)
