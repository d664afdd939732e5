"""The pages of /storage/: the tenant's storage media, their usage, edits and probes."""

from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views import View
from django.views.generic import FormView, ListView, TemplateView

from accounts.permissions import Capability, CapabilityRequiredMixin
from portal.pagination import ClampedPagesMixin
from studies.media import selectors, services
from studies.media.forms import MediumEditForm, MediumFilterForm, MediumForm, MediumStatusForm
from studies.models import MediumStatus, StorageMedium


def _tenant(request: HttpRequest) -> Any:
    return request.tenant  # type: ignore[attr-defined]


class StorageView(CapabilityRequiredMixin, ClampedPagesMixin, ListView):
    """The tenant's storage media with their measured usage, against the quota."""

    capability = Capability.STORAGE_VIEW
    template_name = "studies/storage.html"
    context_object_name = "media"
    paginate_by = 25

    def get_queryset(self) -> QuerySet[StorageMedium]:
        self.filters = MediumFilterForm(self.request.GET or None)
        return selectors.medium_list(**self.filters.criteria())

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        query = self.request.GET.copy()
        query.pop("page", None)
        tenant = _tenant(self.request)
        return super().get_context_data(
            form=self.filters,
            filter_query=query.urlencode(),
            summary=selectors.storage_summary(quota_bytes=tenant.quota_bytes),
            allowed_root=tenant.storage_root,
            **kwargs,
        )


class StorageRefreshView(CapabilityRequiredMixin, TemplateView):
    """Measure every medium now instead of waiting for the usage job (cheap on small archives)."""

    capability = Capability.STORAGE_MANAGE
    template_name = "studies/storage_refresh.html"

    def post(self, request: HttpRequest) -> HttpResponse:
        measured = list(services.media_measure_usage())
        files = sum(usage.files for _medium, usage in measured)
        messages.success(
            request,
            f"Usage measured on {len(measured)} medi{'um' if len(measured) == 1 else 'a'}: "
            f"{files} file{'s' if files != 1 else ''}, "
            f"{services.size_text(sum(usage.bytes for _m, usage in measured))}.",
        )
        return redirect("storage")


class MediumCreateView(CapabilityRequiredMixin, FormView):
    capability = Capability.STORAGE_MANAGE
    template_name = "studies/medium_form.html"
    form_class = MediumForm

    def get_form_kwargs(self) -> dict[str, Any]:
        return {**super().get_form_kwargs(), "allowed_root": _tenant(self.request).storage_root}

    def form_valid(self, form: MediumForm) -> HttpResponse:
        try:
            medium = services.medium_create(
                tenant=_tenant(self.request), request=self.request, **form.service_arguments()
            )
        except ValidationError as error:
            form.add_service_errors(error.message_dict)
            return self.form_invalid(form)
        messages.success(self.request, f"Medium “{medium.name}” added at {medium.root}.")
        return redirect("medium_detail", pk=medium.pk)


class MediumMixin:
    """Loads the medium of the URL from the active tenant's schema (a 404 for anyone else's)."""

    request: HttpRequest
    medium: StorageMedium

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        self.medium = get_object_or_404(StorageMedium, pk=kwargs["pk"])
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return super().get_context_data(medium=self.medium, **kwargs)  # type: ignore[misc]


class MediumDetailView(CapabilityRequiredMixin, MediumMixin, TemplateView):
    capability = Capability.STORAGE_VIEW
    template_name = "studies/medium_detail.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        statuses = [s for s in MediumStatus if s != self.medium.status]
        return super().get_context_data(statuses=statuses, **kwargs)


class MediumEditView(CapabilityRequiredMixin, MediumMixin, FormView):
    capability = Capability.STORAGE_MANAGE
    template_name = "studies/medium_form.html"
    form_class = MediumEditForm

    def get_form_kwargs(self) -> dict[str, Any]:
        return {
            **super().get_form_kwargs(),
            "allowed_root": _tenant(self.request).storage_root,
            "medium": self.medium,
        }

    def form_valid(self, form: MediumEditForm) -> HttpResponse:
        try:
            medium = services.medium_update(
                tenant=_tenant(self.request),
                medium=self.medium,
                request=self.request,
                **form.service_arguments(),
            )
        except ValidationError as error:
            form.add_service_errors(error.message_dict)
            return self.form_invalid(form)
        messages.success(self.request, f"Medium “{medium.name}” saved.")
        return redirect("medium_detail", pk=medium.pk)


class MediumStatusView(CapabilityRequiredMixin, MediumMixin, TemplateView):
    """POST a new status; GET asks for confirmation first (used for retiring)."""

    capability = Capability.STORAGE_MANAGE
    template_name = "studies/medium_status.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        form = MediumStatusForm(self.request.GET or None)
        status = form.cleaned_data["status"] if form.is_valid() else MediumStatus.RETIRED
        return super().get_context_data(new_status=MediumStatus(status), form=form, **kwargs)

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        form = MediumStatusForm(request.POST)
        if not form.is_valid():
            messages.error(request, "Choose online, read-only, offline or retired.")
            return redirect("medium_detail", pk=pk)
        try:
            medium = services.medium_set_status(
                tenant=_tenant(request),
                medium=self.medium,
                status=form.cleaned_data["status"],
                request=request,
            )
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
        else:
            messages.success(request, f"Medium “{medium.name}” is {medium.get_status_display()}.")
        return redirect("medium_detail", pk=pk)


class MediumDeleteView(CapabilityRequiredMixin, MediumMixin, TemplateView):
    capability = Capability.STORAGE_MANAGE
    template_name = "studies/medium_delete.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        try:
            usage = services.medium_usage_now(self.medium)
        except OSError as error:
            messages.error(self.request, f"The medium cannot be measured now: {error}")
            usage = None
        return super().get_context_data(usage=usage, **kwargs)

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        try:
            services.medium_delete(tenant=_tenant(request), medium=self.medium, request=request)
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
            return redirect("medium_detail", pk=pk)
        messages.success(request, f"Medium “{self.medium.name}” deleted.")
        return redirect("storage")


class MediumProbeView(CapabilityRequiredMixin, MediumMixin, View):
    """Run the probe; htmx gets the result fragment, a plain form post a message and redirect."""

    capability = Capability.STORAGE_MANAGE
    http_method_names = ["post"]

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        result = services.medium_probe(tenant=_tenant(request), medium=self.medium, request=request)
        if getattr(request, "htmx", False):
            return render(
                request,
                "studies/partials/probe_result.html",
                {"medium": self.medium, "result": result},
            )
        if result.ok:
            messages.success(request, f"Probe passed. {result.message}")
        else:
            messages.error(request, f"Probe failed: {result.message}")
        return redirect(reverse("medium_detail", kwargs={"pk": pk}) + "#probe")
