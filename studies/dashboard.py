"""The tenant site's home page: archive counts, media usage, ingest activity, alerts, jobs."""

from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.mixins import LoginRequiredMixin
from django.contrib.humanize.templatetags.humanize import intcomma
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.views.generic import TemplateView

from accounts.permissions import Capability, has_capability
from dicomnet.facts import connection_facts
from jobs.models import JobRun, JobStatus
from portal.units import size_text
from studies.index import selectors as index_selectors
from studies.media import selectors as media_selectors
from studies.models import IngestJob, MediumStatus, StorageMedium


@dataclass(frozen=True)
class Tile:
    figure: str
    label: str
    url: str = ""  # where what it counts is listed, if this user may go there
    bad: bool = False


def _link(user: Any, capability: Capability, name: str, query: str = "") -> str:
    return f"{reverse(name)}{query}" if has_capability(user, capability) else ""


class DashboardView(LoginRequiredMixin, TemplateView):
    template_name = "studies/dashboard.html"

    def tiles(
        self, *, users: int, media: int, summary: Any, failed: int, archive: Any
    ) -> list[list[Tile]]:
        user = self.request.user
        studies = _link(user, Capability.STUDIES_VIEW, "study_list")
        storage = _link(user, Capability.STORAGE_VIEW, "storage")
        return [
            [
                Tile(
                    str(users),
                    f"active user{pluralize(users)}",
                    _link(user, Capability.USERS_MANAGE, "user_list"),
                ),
                Tile(str(media), f"storage medi{pluralize(media, 'um,a')}", storage),
                Tile(
                    size_text(summary.used_bytes),
                    f"stored of {size_text(summary.quota_bytes)} quota",
                    storage,
                ),
                Tile(
                    str(failed),
                    f"failed job run{pluralize(failed)}",
                    _link(user, Capability.JOBS_VIEW, "jobs", "?kind=periodic&status=failed"),
                    bad=bool(failed),
                ),
            ],
            [
                Tile(
                    intcomma(archive["studies"]),
                    f"stud{pluralize(archive['studies'], 'y,ies')}",
                    studies,
                ),
                Tile(intcomma(archive["series"]), "series", studies),
                Tile(
                    intcomma(archive["instances"]),
                    f"instance{pluralize(archive['instances'])}",
                    studies,
                ),
            ],
        ]

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        tenant = self.request.tenant  # type: ignore[attr-defined]
        media = list(StorageMedium.objects.exclude(status=MediumStatus.RETIRED))
        summary = media_selectors.storage_summary(quota_bytes=tenant.quota_bytes)
        users = get_user_model().objects.filter(is_active=True)
        failed_jobs = JobRun.objects.filter(status=JobStatus.FAILED).count()
        user_count = users.count()
        archive = index_selectors.archive_counts()
        return super().get_context_data(
            tiles=self.tiles(
                users=user_count,
                media=len(media),
                summary=summary,
                failed=failed_jobs,
                archive=archive,
            ),
            media=media,
            summary=summary,
            used_bytes=summary.used_bytes,
            capacity_bytes=summary.capacity_bytes,
            user_count=user_count,
            roles=users.values_list("role", flat=True),
            failed_jobs=failed_jobs,
            recent_runs=JobRun.objects.all()[:5],
            alerts=[m for m in media if m.status == MediumStatus.ONLINE and m.above_high_watermark],
            archive=archive,
            activity=index_selectors.ingest_activity(days=14),
            recent_ingests=IngestJob.objects.all()[:5],
            dicom=connection_facts(tenant),
            **kwargs,
        )
