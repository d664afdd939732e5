"""Web upload of DICOM files into an ingest job, and the pages that follow the job."""

from typing import Any

from django.contrib import messages
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    JsonResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.generic import ListView

from accounts.permissions import Capability, CapabilityRequiredMixin, has_capability
from portal.pagination import ClampedPagesMixin
from studies.ingest import ingest_job_create, ingest_job_submit
from studies.models import IngestItem, IngestJob, IngestJobStatus, IngestSource
from studies.storage import StoragePathError
from studies.uploads.handlers import StagingUploadHandler
from studies.uploads.services import (
    UploadRefused,
    ingest_job_items,
    ingest_job_list,
    max_upload_bytes,
    quarantine_file,
    upload_job_fail,
    upload_stage_files,
)


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _too_large(request: HttpRequest) -> str:
    """Why the request body is refused before reading it, or ""."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    limit = max_upload_bytes()
    if length > limit:
        return f"The upload of {length} bytes is larger than the limit of {limit} bytes."
    return ""


@method_decorator(csrf_exempt, name="dispatch")
class StreamingUploadMixin(CapabilityRequiredMixin):
    """Uploaded files go straight to temporary files on disk, never into memory.

    The CSRF middleware would read the body before the view could choose its upload
    handlers, so the view is exempted there and checks the token itself, after the switch.
    """

    capability = Capability.INGEST_STORE

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method == "POST":
            if not request.user.is_authenticated:
                return self.handle_no_permission()
            if not has_capability(request.user, self.capability):
                return render(request, "errors/forbidden.html", status=403)
            if reason := _too_large(request):
                return JsonResponse({"detail": reason}, status=413)
            request.upload_handlers = [StagingUploadHandler(request)]
            parent = super().dispatch
            return csrf_protect(lambda r, *a, **k: parent(r, *a, **k))(request, *args, **kwargs)
        return super().dispatch(request, *args, **kwargs)


class UploadView(StreamingUploadMixin, ClampedPagesMixin, ListView):
    """The drop zone and the recent jobs; POST creates a job (and, without JS, takes the files)."""

    template_name = "studies/upload.html"
    context_object_name = "jobs"
    paginate_by = 20

    def get_queryset(self) -> Any:
        return ingest_job_list()

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return super().get_context_data(max_upload_bytes=max_upload_bytes(), **kwargs)

    def post(self, request: HttpRequest) -> HttpResponse:
        files = request.FILES.getlist("files")
        description = request.POST.get("description", "")
        job = ingest_job_create(
            source=IngestSource.UPLOAD, created_by=request.user, description=description
        )
        if _wants_json(request) and not files:
            return JsonResponse(_job_links(job), status=201)
        if not files:
            upload_job_fail(job=job, reason="No files were chosen.")
            messages.error(request, "Choose at least one file, folder or zip to upload.")
            return redirect("upload")
        try:
            upload_stage_files(job=job, files=files)
        except UploadRefused as refused:
            messages.error(request, refused.message)
            return redirect("ingest_job", pk=job.pk)
        ingest_job_submit(job=job)
        messages.success(request, f"{len(files)} file(s) received; processing has started.")
        return redirect("ingest_job", pk=job.pk)


def _job_links(job: IngestJob) -> dict[str, Any]:
    return {
        "id": job.pk,
        "status": job.status,
        "files_url": reverse("upload_files", args=[job.pk]),
        "submit_url": reverse("upload_submit", args=[job.pk]),
        "job_url": reverse("ingest_job", args=[job.pk]),
    }


def _receiving_job(pk: int) -> IngestJob:
    return get_object_or_404(
        IngestJob, pk=pk, source=IngestSource.UPLOAD, status=IngestJobStatus.RECEIVING
    )


class UploadFilesView(StreamingUploadMixin, View):
    """One chunk of files for a receiving job (the JS sends several files per POST)."""

    def post(self, request: HttpRequest, pk: int) -> JsonResponse:
        job = _receiving_job(pk)
        try:
            counts = upload_stage_files(job=job, files=request.FILES.getlist("files"))
        except UploadRefused as refused:
            return JsonResponse({"detail": refused.message, **_job_links(job)}, status=422)
        return JsonResponse({"staged": counts.staged, "rejected": counts.rejected})


class UploadSubmitView(CapabilityRequiredMixin, View):
    """Receiving is over: process the job's files."""

    capability = Capability.INGEST_STORE

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        job = ingest_job_submit(job=_receiving_job(pk))
        if _wants_json(request):
            return JsonResponse(_job_links(job))
        return redirect("ingest_job", pk=job.pk)


class IngestJobView(CapabilityRequiredMixin, ClampedPagesMixin, ListView):
    """One job: its progress and the outcome of every file."""

    capability = Capability.INGEST_STORE
    template_name = "studies/ingest_job.html"
    context_object_name = "items"
    paginate_by = 50

    def get_queryset(self) -> Any:
        self.job = get_object_or_404(IngestJob, pk=self.kwargs["pk"])
        return ingest_job_items(job=self.job)

    def get_template_names(self) -> list[str]:
        # The page's live region polls this view: progress and the files' table, alone.
        if self.request.htmx:
            return ["studies/partials/ingest_live.html"]
        return [self.template_name]

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return super().get_context_data(
            job=self.job,
            can_download_quarantine=has_capability(self.request.user, Capability.STORAGE_MANAGE),
            **kwargs,
        )


class IngestJobProgressView(CapabilityRequiredMixin, View):
    """The progress partial the job page polls every second until the job is over."""

    capability = Capability.INGEST_STORE

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        job = get_object_or_404(IngestJob, pk=pk)
        return render(
            request, "studies/partials/ingest_progress.html", {"job": job, "polled": True}
        )


class QuarantineDownloadView(CapabilityRequiredMixin, View):
    """A rejected file, as it arrived; admins only, since it may hold patient data."""

    capability = Capability.STORAGE_MANAGE

    def get(self, request: HttpRequest, pk: int, item_pk: int) -> FileResponse:
        item = get_object_or_404(IngestItem.objects.select_related("job"), pk=item_pk, job_id=pk)
        try:
            path = quarantine_file(item=item, request=request)
        except (FileNotFoundError, StoragePathError):
            raise Http404("This file is not in quarantine.") from None
        return FileResponse(
            path.open("rb"),
            as_attachment=True,
            filename=item.name.rsplit("/", 1)[-1] or f"item-{item.pk}.dcm",
            content_type="application/octet-stream",
        )
