"""The study pages: search, study detail with thumbnails, zip download and delete."""

from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views import View
from django.views.generic import ListView, TemplateView
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from accounts.permissions import Capability, CapabilityRequiredMixin, has_capability
from audit.services import audit_record
from configuration.models import RemoteNode
from configuration.selectors import tenant_settings
from dicomnet.facts import connection_facts
from dicomnet.remote import remote_find
from dicomnet.retrieve import MAX_STUDIES, retrieve_job_create
from dicomnet.send import send_job_create
from portal.pagination import CappedCountPaginator, ClampedPagesMixin
from studies.dicom import is_valid_uid
from studies.index import selectors, services
from studies.index.header import header_rows
from studies.index.query import QueryError
from studies.models import Instance, RetrieveJob, SendJob, Series, Study
from studies.storage import StoragePathError, instance_path
from studies.viewer.links import viewer_url


class StudySearchForm(forms.Form):
    patient_name = forms.CharField(
        required=False,
        max_length=324,
        label="Patient name",
        widget=forms.TextInput(attrs={"autofocus": True}),
        help_text="* matches any run of characters, ? one; without them, values starting so. "
        "Names ignore case; the other fields match as typed, as DICOM queries do.",
    )
    patient_id = forms.CharField(required=False, max_length=64, label="Patient ID")
    accession_number = forms.CharField(required=False, max_length=64, label="Accession")
    date_from = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"})
    )
    modality = forms.CharField(required=False, max_length=16, label="Modality")
    description = forms.CharField(required=False, max_length=64, label="Description")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            self.add_error("date_to", "The end date is before the start date.")
        return data

    def criteria(self) -> dict[str, Any]:
        """Valid, non-blank criteria for `selectors.study_search` (none when invalid)."""
        if not self.is_valid():
            return {}
        return {key: value for key, value in self.cleaned_data.items() if value}


SORT_COLUMNS = [("patient_name", "Patient"), ("study_date", "Date"), ("received", "Received")]


class StudyListView(CapabilityRequiredMixin, ClampedPagesMixin, ListView):
    capability = Capability.STUDIES_VIEW
    template_name = "studies/study_list.html"
    context_object_name = "studies"
    paginate_by = 50
    paginator_class = CappedCountPaginator

    def get_queryset(self) -> Any:
        self.form = StudySearchForm(self.request.GET or None)
        self.sort = self.request.GET.get("sort", selectors.DEFAULT_STUDY_SORT)
        if self.sort.lstrip("-") not in selectors.STUDY_SORTS:
            self.sort = selectors.DEFAULT_STUDY_SORT
        # A rejected filter lists nothing: every study would look like the answer.
        self.rejected = self.form.is_bound and not self.form.is_valid()
        if self.rejected:
            return Study.objects.none()
        try:
            return selectors.study_search(**self.form.criteria(), sort=self.sort)
        except QueryError as error:  # a value the DICOM matching rules cannot take
            self.form.add_error(None, str(error))
            self.rejected = True
            return Study.objects.none()

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        query = self.request.GET.copy()
        query.pop("page", None)
        base = query.copy()
        base.pop("sort", None)
        headers = []
        for key, label in SORT_COLUMNS:
            active = self.sort.lstrip("-") == key
            descending = self.sort.startswith("-")
            base["sort"] = key if active and descending else f"-{key}"
            headers.append(
                {
                    "key": key,
                    "label": label,
                    "query": base.urlencode(),
                    "active": active,
                    "direction": ("descending" if descending else "ascending") if active else "",
                }
            )
        return super().get_context_data(
            form=self.form,
            filter_query=query.urlencode(),
            filtered=bool(self.form.criteria()),
            rejected=self.rejected,
            bulk_nodes=RemoteNode.objects.order_by("ae_title", "host", "port"),
            headers={h["key"]: h for h in headers},
            **kwargs,
        )


class StudyMixin:
    """Loads the study of the URL from the active tenant's schema; other tenants' UIDs 404."""

    request: HttpRequest
    study: Study

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        study = selectors.study_get(study_instance_uid=kwargs["study_uid"])
        if study is None:
            raise Http404("No such study.")
        self.study = study
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return super().get_context_data(study=self.study, **kwargs)  # type: ignore[misc]


class StudyDetailView(CapabilityRequiredMixin, StudyMixin, TemplateView):
    capability = Capability.STUDIES_VIEW
    template_name = "studies/study_detail.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        services.study_view_record(study=self.study, request=self.request)
        series = list(selectors.study_series(study=self.study))
        for item in series:
            if item.thumbnail or item.thumbnail_error or not item.num_instances:
                continue
            if services.thumbnail_cheap_to_make(series=item):
                made = services.series_thumbnail_make(series_id=item.pk)
                if made is not None:
                    item.thumbnail, item.thumbnail_error = made.thumbnail, made.thumbnail_error
            else:
                services.thumbnail_queue_for_new_series([item.pk])
        template = tenant_settings().viewer_url_template
        uid = self.study.study_instance_uid
        for item in series:
            link = viewer_url(uid, item.series_instance_uid, template=template)
            item.viewer_url = link  # type: ignore[attr-defined]
        return super().get_context_data(
            series_list=series,
            viewer_url=viewer_url(uid, template=template),
            send_form=SendForm() if RemoteNode.objects.exists() else None,
            sends=SendJob.objects.filter(study_instance_uid=self.study.study_instance_uid)[:5],
            **kwargs,
        )


class SeriesMixin(StudyMixin):
    """The series of the URL, inside the study of the URL; anything else is a 404."""

    series: Series

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        study = selectors.study_get(study_instance_uid=kwargs["study_uid"])
        series = (
            Series.objects.filter(study=study, series_instance_uid=kwargs["series_uid"]).first()
            if study is not None
            else None
        )
        if study is None or series is None:
            raise Http404("No such series.")
        self.study, self.series = study, series
        # The study is found already: on past StudyMixin's own lookup.
        return super(StudyMixin, self).dispatch(request, *args, **kwargs)  # type: ignore[misc]

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return super().get_context_data(series=self.series, **kwargs)


class SeriesDetailView(CapabilityRequiredMixin, SeriesMixin, ClampedPagesMixin, ListView):
    """A series' instances, each linked to its header and a larger preview."""

    capability = Capability.STUDIES_VIEW
    template_name = "studies/series_detail.html"
    context_object_name = "instances"
    paginate_by = 100

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        send_form = SendForm(initial={"series": self.series.series_instance_uid})
        return super().get_context_data(
            send_form=send_form if RemoteNode.objects.exists() else None,
            viewer_url=viewer_url(self.study.study_instance_uid, self.series.series_instance_uid),
            **kwargs,
        )

    def get_queryset(self) -> Any:
        return (
            Instance.objects.filter(series=self.series)
            .select_related("medium")
            .order_by("instance_number", "pk")
        )


class InstanceDetailView(CapabilityRequiredMixin, SeriesMixin, TemplateView):
    """One instance: its facts, a larger preview and its DICOM header (PHI: audited)."""

    capability = Capability.STUDIES_VIEW
    template_name = "studies/instance_detail.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        instance = (
            Instance.objects.filter(series=self.series, sop_instance_uid=self.kwargs["sop_uid"])
            .select_related("medium")
            .first()
        )
        if instance is None:
            raise Http404("No such instance.")
        try:
            rows, cut = header_rows(instance_path(instance))
            problem = ""
        except (OSError, StoragePathError, InvalidDicomError, ValueError) as error:
            rows, cut, problem = [], False, f"The stored file could not be read: {error}"
        audit_record(
            action="instance.view_header",
            request=self.request,
            target=instance,
            details={
                "study": self.study.study_instance_uid,
                "series": self.series.series_instance_uid,
                "sop_instance_uid": instance.sop_instance_uid,
            },
        )
        return super().get_context_data(
            instance=instance,
            sop_class=UID(instance.sop_class_uid).name,
            transfer_syntax=UID(instance.transfer_syntax_uid).name,
            header=rows,
            header_cut=cut,
            header_problem=problem,
            **kwargs,
        )


class SeriesThumbnailView(CapabilityRequiredMixin, StudyMixin, View):
    """The PNG of a series, read from the tenant's root (never a public media URL)."""

    capability = Capability.STUDIES_VIEW

    def get(self, request: HttpRequest, study_uid: str, series_uid: str) -> HttpResponseBase:
        series = Series.objects.filter(study=self.study, series_instance_uid=series_uid).first()
        path = services.series_thumbnail_file(series=series) if series else None
        if path is None:
            raise Http404("No thumbnail.")
        response = FileResponse(path.open("rb"), content_type="image/png")
        response["Cache-Control"] = "private, max-age=300"
        return response


class StudyDownloadView(CapabilityRequiredMixin, StudyMixin, View):
    capability = Capability.STUDIES_VIEW

    def get(self, request: HttpRequest, study_uid: str) -> StreamingHttpResponse:
        stream = services.study_download(study=self.study, request=request)
        response = StreamingHttpResponse(stream, content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="{study_uid}.zip"'
        response["Cache-Control"] = "private, no-store"
        return response


class StudyDeleteView(CapabilityRequiredMixin, StudyMixin, TemplateView):
    """GET asks for confirmation with the counts; POST deletes."""

    capability = Capability.STUDIES_MANAGE
    template_name = "studies/study_delete.html"

    def post(self, request: HttpRequest, study_uid: str) -> HttpResponse:
        deletion = services.study_delete(study=self.study, request=request)
        messages.success(
            request,
            f"Study {deletion.study_instance_uid} deleted: {deletion.series} series, "
            f"{deletion.instances} instance{'s' if deletion.instances != 1 else ''}.",
        )
        return redirect("study_list")


class SendForm(forms.Form):
    node = forms.ModelChoiceField(
        queryset=RemoteNode.objects.order_by("ae_title", "host", "port"),
        label="Send to",
        empty_label=None,
        help_text="One of this archive's remote nodes (Settings).",
    )
    series = forms.CharField(required=False, max_length=64, widget=forms.HiddenInput)


class StudySendView(CapabilityRequiredMixin, StudyMixin, View):
    """POST: queue the study (or the series named) for a remote node, then show the job."""

    capability = Capability.STUDIES_MANAGE

    def post(self, request: HttpRequest, study_uid: str) -> HttpResponseBase:
        form = SendForm(request.POST)
        if not form.is_valid():
            messages.error(request, "Choose one of the remote nodes to send to.")
            return redirect("study_detail", study_uid)
        series = None
        if form.cleaned_data["series"]:
            series = Series.objects.filter(
                study=self.study, series_instance_uid=form.cleaned_data["series"]
            ).first()
            if series is None:
                raise Http404("No such series in this study.")
        try:
            job = send_job_create(
                study=self.study, series=series, node=form.cleaned_data["node"], request=request
            )
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
            return redirect("study_detail", study_uid)
        return redirect("send_job", job.pk)


class SendJobView(CapabilityRequiredMixin, TemplateView):
    """A send job's progress and the instances that did not arrive; htmx polls it alone."""

    capability = Capability.STUDIES_VIEW
    template_name = "studies/send_job.html"

    def get_template_names(self) -> list[str]:
        if self.request.htmx:  # type: ignore[attr-defined]
            return ["studies/partials/send_progress.html"]
        return [self.template_name]

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        job = get_object_or_404(SendJob.objects.select_related("created_by"), pk=kwargs["pk"])
        return super().get_context_data(job=job, **kwargs)


BULK_LIMIT = 200


class BulkForm(forms.Form):
    action = forms.ChoiceField(
        choices=[("download", "Download zip"), ("send", "Send to a node"), ("delete", "Delete")]
    )
    node = forms.ModelChoiceField(
        queryset=RemoteNode.objects.order_by("ae_title", "host", "port"), required=False
    )
    confirmed = forms.BooleanField(required=False, widget=forms.HiddenInput)


class StudyBulkView(CapabilityRequiredMixin, View):
    """POST: the studies ticked on the list, downloaded as one zip (a folder each), sent to a
    node (a job each) or deleted (after a confirmation page that names them). At most
    BULK_LIMIT at once; only this tenant's. Sending and deleting need studies.manage."""

    capability = Capability.STUDIES_VIEW

    def post(self, request: HttpRequest) -> HttpResponseBase:
        form = BulkForm(request.POST)
        manages = has_capability(request.user, Capability.STUDIES_MANAGE)
        if request.POST.get("action") != "download" and not manages:
            return render(request, "errors/forbidden.html", status=403)
        uids = [uid for uid in request.POST.getlist("uids") if selectors.UID_PATTERN.match(uid)]
        studies = list(Study.objects.filter(study_instance_uid__in=uids[:BULK_LIMIT]))
        back = _safe_list_url(request.POST.get("next", ""))
        if not form.is_valid() or not studies:
            messages.error(request, "Tick one or more studies and choose what to do with them.")
            return redirect(back)
        if len(uids) > BULK_LIMIT:
            messages.error(request, f"At most {BULK_LIMIT} studies at once.")
            return redirect(back)
        if form.cleaned_data["action"] == "download":
            return self.download(request, studies)
        if form.cleaned_data["action"] == "send":
            return self.send(request, studies, form.cleaned_data["node"], back)
        if not form.cleaned_data["confirmed"]:
            return render(
                request,
                "studies/study_bulk_delete.html",
                {
                    "studies": studies,
                    "next": back,
                    "instances": sum(s.num_instances for s in studies),
                },
            )
        for study in studies:
            services.study_delete(study=study, request=request)
        messages.success(
            request, f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'} deleted."
        )
        return redirect(back)

    def download(self, request: HttpRequest, studies: list[Study]) -> HttpResponseBase:
        stream = services.studies_download(studies=studies, request=request)
        response = StreamingHttpResponse(stream, content_type="application/zip")
        name = f"studies-{timezone.localdate():%Y%m%d}-{len(studies)}.zip"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        response["Cache-Control"] = "private, no-store"
        return response

    def send(
        self, request: HttpRequest, studies: list[Study], node: RemoteNode | None, back: str
    ) -> HttpResponseBase:
        if node is None:
            messages.error(request, "Choose the remote node to send to.")
            return redirect(back)
        queued = 0
        for study in studies:
            try:
                send_job_create(study=study, node=node, request=request)
                queued += 1
            except ValidationError as error:
                messages.error(request, f"{study.patient_name}: {' '.join(error.messages)}")
        messages.success(
            request, f"{queued} send job{'s' if queued != 1 else ''} queued to {node}."
        )
        return redirect(f"{reverse('jobs')}?kind=send")


def _safe_list_url(candidate: str) -> str:
    """Back to the study list the request came from (its query kept), never elsewhere."""
    return _safe_back(candidate, reverse("study_list"))


def _safe_back(candidate: str, base: str) -> str:
    """`candidate` when it is a path below `base` of this site, else `base` itself."""
    return candidate if candidate.startswith(base) and "//" not in candidate else base


class RemoteQueryForm(forms.Form):
    node = forms.ModelChoiceField(
        queryset=RemoteNode.objects.order_by("ae_title", "host", "port"),
        label="Remote node",
        empty_label=None,
    )
    patient_name = forms.CharField(
        required=False, max_length=64, help_text="DICOM matching: * and ? are wildcards."
    )
    patient_id = forms.CharField(required=False, max_length=64, label="Patient ID")
    date_from = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"})
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not any(data.get(k) for k in ("patient_name", "patient_id", "date_from", "date_to")):
            raise ValidationError("Give a name, an ID or dates: a query for everything is refused.")
        return data


class RemoteQueryView(CapabilityRequiredMixin, TemplateView):
    """`/studies/remote/`: ask one of the tenant's nodes which studies it holds (C-FIND)."""

    capability = Capability.STUDIES_MANAGE
    template_name = "studies/remote_query.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        form = RemoteQueryForm(self.request.GET or None)
        found = None
        if form.is_bound and form.is_valid():
            data = form.cleaned_data
            found = remote_find(
                node=data["node"],
                tenant=self.request.tenant,  # type: ignore[attr-defined]
                request=self.request,
                patient_name=data["patient_name"],
                patient_id=data["patient_id"],
                date_from=data["date_from"],
                date_to=data["date_to"],
            )
        return super().get_context_data(
            form=form,
            found=found,
            has_nodes=RemoteNode.objects.exists(),
            tenant_ae=self.request.tenant.ae_title,  # type: ignore[attr-defined]
            dicom=connection_facts(self.request.tenant),  # type: ignore[attr-defined]
            max_studies=MAX_STUDIES,
            **kwargs,
        )


class RetrieveForm(forms.Form):
    node = forms.ModelChoiceField(queryset=RemoteNode.objects.all())

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        asked = self.data.getlist("study") if hasattr(self.data, "getlist") else []
        if not asked:
            raise ValidationError("Tick the studies to retrieve.")
        if len(asked) > MAX_STUDIES:
            raise ValidationError(f"At most {MAX_STUDIES} studies at once.")
        if not all(is_valid_uid(uid) for uid in asked):
            raise ValidationError("That is not a Study Instance UID.")
        data["studies"] = list(dict.fromkeys(asked))
        return data


class RetrieveView(CapabilityRequiredMixin, View):
    """POST from the remote query page: one retrieval job per ticked study (C-MOVE)."""

    capability = Capability.STUDIES_MANAGE

    def post(self, request: HttpRequest) -> HttpResponseBase:
        form = RetrieveForm(request.POST)
        back = _safe_remote_url(request.POST.get("next", ""))
        if not form.is_valid():
            problems = (str(e) for errors in form.errors.values() for e in errors)
            messages.error(request, " ".join(problems))
            return redirect(back)
        node = form.cleaned_data["node"]
        jobs = []
        try:
            for uid in form.cleaned_data["studies"]:
                label = str(request.POST.get(f"label-{uid}", ""))
                jobs.append(
                    retrieve_job_create(
                        node=node, study_instance_uid=uid, description=label, request=request
                    )
                )
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
            return redirect(back)
        if len(jobs) == 1:
            return redirect("retrieve_job", jobs[0].pk)
        messages.success(request, f"{len(jobs)} retrievals from {node.ae_title} queued.")
        return redirect(f"{reverse('jobs')}?kind=retrieve")


def _safe_remote_url(candidate: str) -> str:
    return _safe_back(candidate, reverse("remote_query"))


class RetrieveJobView(CapabilityRequiredMixin, TemplateView):
    """A retrieval's progress as the node reports it; htmx polls it alone."""

    capability = Capability.STUDIES_VIEW
    template_name = "studies/retrieve_job.html"

    def get_template_names(self) -> list[str]:
        if self.request.htmx:  # type: ignore[attr-defined]
            return ["studies/partials/retrieve_progress.html"]
        return [self.template_name]

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        job = get_object_or_404(RetrieveJob.objects.select_related("created_by"), pk=kwargs["pk"])
        arrived = Study.objects.filter(study_instance_uid=job.study_instance_uid).first()
        return super().get_context_data(job=job, arrived=arrived, **kwargs)
