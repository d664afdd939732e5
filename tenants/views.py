"""The super-admin site: fleet dashboard and tenant lifecycle, on the base domain."""

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.mixins import AccessMixin
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views import View
from django.views.generic import FormView, ListView, TemplateView

from portal.pagination import ClampedPagesMixin
from tenants import selectors, services, usage
from tenants.forms import (
    GIB,
    DomainForm,
    TenantCreateForm,
    TenantDeleteForm,
    TenantEditForm,
    TenantSuspendForm,
)
from tenants.links import tenant_base_url
from tenants.models import Domain, SelftestRun, Tenant, TenantStatus
from tenants.selftest import selftest_request


class SuperAdminRequiredMixin(AccessMixin):
    """Only super-admins (superusers of the public schema) get past this."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        if not request.user.is_superuser:
            return render(request, "errors/forbidden.html", status=403)
        self.admitted(**kwargs)
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]

    def admitted(self, **kwargs: Any) -> None:
        """Runs once the visitor is known to be a super-admin: lookups that could reveal
        what exists belong here, not before the login check."""


def _form_errors_from(error: ValidationError, form: Any) -> None:
    """Put a service's ValidationError next to the matching form fields."""
    if hasattr(error, "error_dict"):
        for field, errors in error.error_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, error)


class FleetFilterForm(forms.Form):
    q = forms.CharField(
        required=False,
        max_length=100,
        label="Search",
        widget=forms.TextInput(attrs={"type": "search", "placeholder": "Name, slug or AE title"}),
    )
    status = forms.ChoiceField(
        required=False, choices=[("", "Any status"), *TenantStatus.choices], label="Status"
    )
    flag = forms.ChoiceField(
        required=False,
        label="Show",
        choices=[
            ("", "All tenants"),
            ("attention", "Needing attention"),
            ("over-quota", "Over their quota"),
            ("failed-jobs", "With failed jobs"),
            ("behind", "Behind on migrations"),
            ("full-media", "With media above the watermark"),
            ("unmeasured", "Not measured yet"),
        ],
    )
    sort = forms.ChoiceField(
        required=False,
        label="Sort by",
        choices=[
            ("name", "Name"),
            ("-created", "Newest first"),
            ("created", "Oldest first"),
            ("-used", "Most storage used"),
            ("status", "Status"),
        ],
    )
    purged = forms.BooleanField(required=False, label="Include purged")


class FleetView(SuperAdminRequiredMixin, ClampedPagesMixin, ListView):
    """The fleet, a page at a time, from the figures the periodic pass keeps: the same few
    queries at 10 tenants or 10,000."""

    template_name = "tenants/fleet.html"
    context_object_name = "tenants"
    paginate_by = 50

    def get_queryset(self) -> Any:
        self.form = FleetFilterForm(self.request.GET or None)
        data = self.form.cleaned_data if self.form.is_valid() else {}
        self.filtered = any(data.get(k) for k in ("q", "status", "flag"))
        return selectors.fleet(
            include_purged=bool(data.get("purged")),
            search=data.get("q", ""),
            status=data.get("status", ""),
            flag=data.get("flag", ""),
            sort=data.get("sort") or "name",
        )

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        query = self.request.GET.copy()
        query.pop("page", None)
        return super().get_context_data(
            form=self.form,
            filtered=self.filtered,
            filter_query=query.urlencode(),
            attention=selectors.fleet_attention(),
            usage=usage.usage_fleet_overview(),
            **kwargs,
        )


class PlatformView(SuperAdminRequiredMixin, TemplateView):
    """The platform at a glance: readiness checks with their reasons, queues, workers."""

    template_name = "tenants/platform.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        from portal.platform_status import platform_status

        return super().get_context_data(status=platform_status(), **kwargs)


class SelftestView(SuperAdminRequiredMixin, View):
    """The tenant-boundary self-test: the last runs, and a button that queues one."""

    def get(self, request: HttpRequest) -> HttpResponse:
        runs = list(SelftestRun.objects.all()[:10])
        context = {"runs": runs, "latest": runs[0] if runs else None}
        if request.headers.get("HX-Request") and request.GET.get("partial"):
            return render(request, "tenants/partials/selftest_runs.html", context)
        return render(request, "tenants/selftest.html", context)

    def post(self, request: HttpRequest) -> HttpResponse:
        run = selftest_request(actor=request.user.get_username())
        messages.success(request, f"Self-test #{run.pk} is {run.get_status_display().lower()}.")
        return redirect("selftest")


class TenantCreateView(SuperAdminRequiredMixin, FormView):
    template_name = "tenants/tenant_create.html"
    form_class = TenantCreateForm

    def form_valid(self, form: TenantCreateForm) -> HttpResponse:
        data = form.cleaned_data
        try:
            creation = services.tenant_create(
                slug=data["slug"],
                name=data["name"],
                admin_email=data["admin_email"],
                ae_title=data["ae_title"],
                quota_bytes=data["quota_gib"] * GIB,
                quota_users=data["quota_users"],
                storage_root=data["storage_root"] or None,
                created_by=self.request.user.get_username(),
            )
        except ValidationError as error:
            _form_errors_from(error, form)
            return self.form_invalid(form)
        # Rendered, not redirected: the set-password link is shown this once and kept nowhere.
        return render(
            self.request,
            "tenants/tenant_created.html",
            {
                "tenant": creation.tenant,
                "admin": creation.admin,
                "set_password_url": creation.set_password_url,
                "expires_at": creation.expires_at,
                "site_url": tenant_base_url(creation.tenant) + "/",
            },
        )


class TenantMixin(SuperAdminRequiredMixin):
    def admitted(self, **kwargs: Any) -> None:
        self.tenant = get_object_or_404(
            selectors.tenant_list(include_purged=True), slug=kwargs["slug"]
        )

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return super().get_context_data(tenant=self.tenant, **kwargs)  # type: ignore[misc]


class TenantDetailView(TenantMixin, TemplateView):
    template_name = "tenants/tenant_detail.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        from tenants import provisioning

        return super().get_context_data(
            figures=selectors.tenant_figures(self.tenant),
            migrations=provisioning.migration_state(self.tenant.schema_name),
            events=self.tenant.events.all()[:50],
            domain_form=DomainForm(),
            suspend_form=TenantSuspendForm(),
            site_url=tenant_base_url(self.tenant) + "/",
            **kwargs,
        )


class TenantEditView(TenantMixin, FormView):
    template_name = "tenants/tenant_edit.html"
    form_class = TenantEditForm

    def get_form_kwargs(self) -> dict[str, Any]:
        # Edit a copy: a rejected form must not leave half-applied values on self.tenant.
        return {**super().get_form_kwargs(), "instance": Tenant.objects.get(pk=self.tenant.pk)}

    def form_valid(self, form: TenantEditForm) -> HttpResponse:
        data = form.cleaned_data
        try:
            services.tenant_update(
                tenant=self.tenant,
                actor=self.request.user.get_username(),
                name=data["name"],
                ae_title=data["ae_title"] or None,
                quota_bytes=data["quota_gib"] * GIB,
                quota_users=data["quota_users"],
                storage_root=data["storage_root"],
            )
        except ValidationError as error:
            _form_errors_from(error, form)
            return self.form_invalid(form)
        messages.success(self.request, f"Saved {self.tenant.slug}.")
        return redirect("tenant_detail", slug=self.tenant.slug)


class TenantActionView(TenantMixin, View):
    """POST-only lifecycle actions without a form of their own: resume, restore."""

    action = ""

    def post(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        actor = request.user.get_username()
        try:
            if self.action == "resume":
                services.tenant_resume(tenant=self.tenant, actor=actor)
            elif self.action == "restore":
                services.tenant_restore(tenant=self.tenant, actor=actor)
            elif self.action == "suspend":
                form = TenantSuspendForm(request.POST)
                reason = form.cleaned_data["reason"] if form.is_valid() else ""
                services.tenant_suspend(tenant=self.tenant, actor=actor, reason=reason)
        except services.TenantLifecycleError as error:
            messages.error(request, str(error))
        else:
            messages.success(request, f"Tenant {self.tenant.slug}: {self.action} done.")
        return redirect("tenant_detail", slug=self.tenant.slug)


class TenantAdminLinkView(TenantMixin, View):
    """POST: a new set-password link for the tenant's admin, e-mailed and shown this once."""

    def post(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        try:
            link = services.tenant_admin_link(tenant=self.tenant, actor=request.user.get_username())
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
            return redirect("tenant_detail", slug=self.tenant.slug)
        return render(
            request,
            "tenants/tenant_created.html",
            {
                "tenant": self.tenant,
                "admin": link.user,
                "set_password_url": link.url,
                "expires_at": link.expires_at,
                "site_url": tenant_base_url(self.tenant) + "/",
                "reissued": True,
            },
        )


class TenantDeleteView(TenantMixin, FormView):
    template_name = "tenants/tenant_delete.html"
    form_class = TenantDeleteForm

    def form_valid(self, form: TenantDeleteForm) -> HttpResponse:
        try:
            services.tenant_delete(
                tenant=self.tenant,
                actor=self.request.user.get_username(),
                confirm_slug=form.cleaned_data["confirm_slug"],
            )
        except ValidationError as error:
            _form_errors_from(error, form)
            return self.form_invalid(form)
        except services.TenantLifecycleError as error:
            form.add_error(None, str(error))
            return self.form_invalid(form)
        messages.success(
            self.request,
            f"Tenant {self.tenant.slug} deleted; its data is kept "
            f"until {self.tenant.purge_after:%Y-%m-%d %H:%M}.",
        )
        return redirect("fleet")


class DomainAddView(TenantMixin, View):
    def post(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        form = DomainForm(request.POST)
        if form.is_valid():
            try:
                services.domain_add(
                    tenant=self.tenant,
                    domain=form.cleaned_data["domain"],
                    actor=request.user.get_username(),
                )
                messages.success(request, f"Added {form.cleaned_data['domain']}.")
            except ValidationError as error:
                messages.error(request, " ".join(error.messages))
        else:
            messages.error(request, "Enter a host name.")
        return redirect("tenant_detail", slug=self.tenant.slug)


class DomainRemoveView(TenantMixin, View):
    def post(self, request: HttpRequest, pk: int, **kwargs: Any) -> HttpResponse:
        domain = get_object_or_404(Domain, pk=pk, tenant=self.tenant)
        try:
            services.domain_remove(domain=domain, actor=request.user.get_username())
            messages.success(request, f"Removed {domain.domain}.")
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
        return redirect("tenant_detail", slug=self.tenant.slug)


class TenantUsageView(TenantMixin, TemplateView):
    """One tenant's daily usage records, the last 30 days or `?from=&to=`: charts, table,
    CSV link. A window that cannot be read is said so, and the last 30 days are shown."""

    template_name = "tenants/tenant_usage.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        problems: list[str] = []
        try:
            chosen = usage.usage_filter_parse(
                {key: self.request.GET.get(key, "") for key in ("from", "to")}
            )
            overview = usage.usage_overview(
                tenant=self.tenant, first=chosen.first, last=chosen.last
            )
        except ValidationError as error:
            problems = [m for messages_ in error.message_dict.values() for m in messages_]
            overview = usage.usage_overview(tenant=self.tenant)
        return super().get_context_data(usage=overview, window_problems=problems, **kwargs)


class UsageExportView(SuperAdminRequiredMixin, View):
    """`/tenants/usage.csv?from=YYYY-MM-DD&to=YYYY-MM-DD&tenant=slug`: records for billing."""

    def get(self, request: HttpRequest) -> HttpResponseBase:
        try:
            chosen = usage.usage_filter_parse(request.GET)
        except ValidationError as error:
            text = "\n".join(f"{field}: {' '.join(m)}" for field, m in error.message_dict.items())
            return HttpResponse(text + "\n", status=400, content_type="text/plain")
        records = usage.usage_records(tenant=chosen.tenant, first=chosen.first, last=chosen.last)
        name = "-".join(
            ["usage"]
            + ([chosen.tenant.slug] if chosen.tenant else [])
            + [f"{day:%Y%m%d}" for day in (chosen.first, chosen.last) if day]
        )
        response = StreamingHttpResponse(usage.usage_csv_rows(records), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
        return response
