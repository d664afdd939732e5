"""/jobs/: what the workers did for this tenant (ingest jobs, periodic runs) and retries."""

from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import NoReverseMatch, reverse
from django.views import View
from django.views.generic import ListView

from accounts.permissions import Capability, CapabilityRequiredMixin, has_capability
from jobs.models import JobRun, JobStatus
from jobs.runs import job_run_retry
from portal.pagination import ClampedPagesMixin
from studies.maintenance.services import ingest_job_retry, retryable_items
from studies.models import (
    IngestItem,
    IngestJob,
    IngestJobStatus,
    RetrieveJob,
    RetrieveJobStatus,
    SendJob,
    SendJobStatus,
)

KINDS = [
    ("ingest", "Ingest jobs"),
    ("send", "Sends to nodes"),
    ("retrieve", "Retrievals from nodes"),
    ("periodic", "Periodic runs"),
]
STATUSES = {
    "ingest": IngestJobStatus.choices,
    "send": SendJobStatus.choices,
    "retrieve": RetrieveJobStatus.choices,
    "periodic": JobStatus.choices,
}
# Url names of the page of one ingest job, as the upload section may call it.
INGEST_JOB_URL_NAMES = ("ingest_job", "upload_job")


class JobFilterForm(forms.Form):
    kind = forms.ChoiceField(choices=KINDS, required=False, widget=forms.HiddenInput)
    status = forms.ChoiceField(required=False, label="Status")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        given = str(self.data.get("kind", ""))
        kind = given if given in STATUSES else "ingest"
        self.chosen_kind = kind
        self.fields["kind"].initial = kind
        status_field = self.fields["status"]
        assert isinstance(status_field, forms.ChoiceField)
        status_field.choices = [("", "Any status"), *STATUSES[kind]]

    def chosen_status(self) -> str:
        return self.cleaned_data.get("status", "") if self.is_valid() else ""


def _ingest_job_url_name() -> str | None:
    for name in INGEST_JOB_URL_NAMES:
        try:
            reverse(name, args=[1])
        except NoReverseMatch:
            continue
        return name
    return None


class JobListView(CapabilityRequiredMixin, ClampedPagesMixin, ListView):
    capability = Capability.JOBS_VIEW
    template_name = "jobs/job_list.html"
    context_object_name = "jobs"
    paginate_by = 25

    def get_queryset(self) -> QuerySet[Any]:
        self.form = JobFilterForm(self.request.GET or None)
        status = self.form.chosen_status()
        if self.form.chosen_kind == "periodic":
            runs = JobRun.objects.order_by("-started_at", "-id")
            return runs.filter(status=status) if status else runs
        if self.form.chosen_kind == "send":
            sends = SendJob.objects.select_related("created_by")
            return sends.filter(status=status) if status else sends
        if self.form.chosen_kind == "retrieve":
            pulls = RetrieveJob.objects.select_related("created_by")
            return pulls.filter(status=status) if status else pulls
        jobs = IngestJob.objects.select_related("created_by").order_by("-created_at", "-id")
        # Retry is offered only where it can change something (not for refused content).
        jobs = jobs.annotate(
            can_retry=Exists(IngestItem.objects.filter(retryable_items(), job=OuterRef("pk")))
        )
        return jobs.filter(status=status) if status else jobs

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        if self.form.chosen_kind == "periodic":
            for run in context["jobs"]:
                # Only the counters; reports (per medium, details) are too long for a row.
                run.count_items = [
                    (name, value) for name, value in run.counts.items() if isinstance(value, int)
                ]
                run.problems = run.counts.get("details", [])
        query = self.request.GET.copy()
        query.pop("page", None)
        context.update(
            form=self.form,
            kind=self.form.chosen_kind,
            kinds=KINDS,
            filter_query=query.urlencode(),
            filtered=bool(self.form.chosen_status()),
            can_manage=has_capability(self.request.user, Capability.JOBS_MANAGE),
            ingest_job_url=_ingest_job_url_name(),
        )
        return context


class _RetryView(CapabilityRequiredMixin, View):
    capability = Capability.JOBS_MANAGE
    kind = ""

    def retry(self, request: HttpRequest, pk: int) -> str:
        raise NotImplementedError

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        try:
            messages.success(request, self.retry(request, pk))
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
        return redirect(f"{reverse('jobs')}?kind={self.kind}")


class JobRunRetryView(_RetryView):
    kind = "periodic"

    def retry(self, request: HttpRequest, pk: int) -> str:
        run = job_run_retry(run=get_object_or_404(JobRun, pk=pk), request=request)
        return f"The {run.job} run for {run.period} was queued again."


class IngestJobRetryView(_RetryView):
    kind = "ingest"

    def retry(self, request: HttpRequest, pk: int) -> str:
        queued = ingest_job_retry(job=get_object_or_404(IngestJob, pk=pk), request=request)
        noun = "file" if queued == 1 else "files"
        return f"Ingest job #{pk}: {queued} {noun} queued again."
