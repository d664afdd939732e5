"""The tenant's configuration pages (/settings/): sections, nodes, retention rules, history."""

from typing import Any

from django import forms
from django.contrib import messages
from django.core import signing
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views import View
from django.views.generic import ListView, TemplateView

from accounts.permissions import Capability, CapabilityRequiredMixin, has_capability
from configuration import forms as f
from configuration import selectors, services
from configuration.models import RemoteNode, RetentionRule, SettingChange, TenantSettings
from configuration.ohif import dicomweb_roots, ohif_config, ohif_config_json
from configuration.validators import available_timezones
from dicomnet.facts import connection_facts
from studies.viewer.bundle import OHIF_VERSION

PREVIEW_SALT = "configuration.retention-preview"
# A dry run older than this is shown again before the rule is saved.
PREVIEW_MAX_AGE = 15 * 60


def _settings_url(anchor: str) -> str:
    return f"{reverse('settings')}#{anchor}"


def _section_initial(row: TenantSettings, tenant: Any) -> dict[str, dict[str, Any]]:
    return {
        "identity": {"display_name": tenant.name, "ae_title": tenant.ae_title or ""},
        "policies": {
            "duplicate_policy": row.duplicate_policy,
            "patient_mismatch_policy": row.patient_mismatch_policy,
            "require_known_nodes": row.require_known_nodes,
            "query_retrieve_from_any_node": row.query_retrieve_from_any_node,
            "require_admin_2fa": row.require_admin_2fa,
        },
        "cors": {"cors_origins": "\n".join(row.cors_origins)},
        "viewer": {"viewer_url_template": row.viewer_url_template},
        "appearance": {"accent_colour": row.accent_colour, "timezone": row.timezone},
        "jobs": {field: getattr(row, field) for field in f.JobsForm.base_fields},
    }


class SettingsView(CapabilityRequiredMixin, TemplateView):
    """Every section on one page; each section's form posts here with its `section` name."""

    capability = Capability.SETTINGS_VIEW
    template_name = "configuration/settings.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        row = selectors.tenant_settings()
        tenant = self.request.tenant  # type: ignore[attr-defined]
        initial = _section_initial(row, tenant)
        bound: forms.Form | None = kwargs.pop("bound_form", None)
        sections = {
            name: bound
            if bound is not None and bound.prefix == name
            else form(initial=initial[name], prefix=name)
            for name, form in f.SECTION_FORMS.items()
        }
        rules = list(selectors.retention_rule_list())
        return super().get_context_data(
            tenant=tenant,
            settings_row=row,
            forms=sections,
            nodes=selectors.node_list(),
            rules=rules,
            retention_idle=bool(rules) and not row.job_retention,
            changes=selectors.setting_change_list().select_related("actor")[:10],
            can_manage=has_capability(self.request.user, Capability.SETTINGS_MANAGE),
            calling_ae=selectors.calling_ae_title(tenant),
            dicom=connection_facts(tenant),
            timezones=sorted(available_timezones()),
            ohif_json=ohif_config_json(tenant, self.request),
            viewer_version=OHIF_VERSION,
            ohif_dicomweb_root=dicomweb_roots(tenant, self.request)[0],
            **kwargs,
        )

    def post(self, request: HttpRequest) -> HttpResponse:
        if not has_capability(request.user, Capability.SETTINGS_MANAGE):
            return render(request, "errors/forbidden.html", status=403)
        section = request.POST.get("section", "")
        form_class = f.SECTION_FORMS.get(section)
        if form_class is None:
            messages.error(request, "Unknown settings section; nothing was changed.")
            return redirect("settings")
        row = selectors.tenant_settings()
        initial = _section_initial(row, request.tenant)[section]  # type: ignore[attr-defined]
        form = form_class(request.POST, prefix=section, initial=initial)  # shown if disabled
        if form.is_valid():
            try:
                services.settings_update(
                    tenant=request.tenant,  # type: ignore[attr-defined]
                    actor=request.user,  # type: ignore[arg-type]
                    request=request,
                    **form.cleaned_data,
                )
            except ValidationError as error:
                f.add_service_errors(form, error)
            else:
                messages.success(request, "Settings saved.")
                return redirect(_settings_url(section))
        messages.error(request, "Nothing was saved: correct the marked fields.")
        return self.render_to_response(self.get_context_data(bound_form=form))


class OhifConfigView(CapabilityRequiredMixin, View):
    """The OHIF data source of the settings page, as a file to download."""

    capability = Capability.SETTINGS_VIEW

    def get(self, request: HttpRequest) -> JsonResponse:
        tenant = request.tenant  # type: ignore[attr-defined]
        response = JsonResponse(ohif_config(tenant, request), json_dumps_params={"indent": 2})
        response["Content-Disposition"] = f'attachment; filename="ohif-{tenant.slug}.json"'
        return response


class SettingChangeListView(CapabilityRequiredMixin, ListView):
    capability = Capability.SETTINGS_VIEW
    template_name = "configuration/history.html"
    context_object_name = "changes"
    paginate_by = 50

    def get_queryset(self) -> QuerySet[SettingChange]:
        return selectors.setting_change_list().select_related("actor")


class NodeFormView(CapabilityRequiredMixin, View):
    """Add a remote node (no `pk`) or edit one."""

    capability = Capability.SETTINGS_MANAGE

    def _node(self, pk: int | None) -> RemoteNode | None:
        return get_object_or_404(RemoteNode, pk=pk) if pk is not None else None

    def _render(self, form: forms.Form, node: RemoteNode | None) -> HttpResponse:
        return render(self.request, "configuration/node_form.html", {"form": form, "node": node})

    def get(self, request: HttpRequest, pk: int | None = None) -> HttpResponse:
        node = self._node(pk)
        initial = {field: getattr(node, field) for field in services.NODE_FIELDS} if node else {}
        return self._render(f.RemoteNodeForm(initial=initial), node)

    def post(self, request: HttpRequest, pk: int | None = None) -> HttpResponse:
        node = self._node(pk)
        form = f.RemoteNodeForm(request.POST)
        if form.is_valid():
            try:
                if node is None:
                    node = services.node_create(
                        actor=request.user,  # type: ignore[arg-type]
                        request=request,
                        **form.cleaned_data,
                    )
                    messages.success(request, f"Remote node {node} added.")
                else:
                    node = services.node_update(
                        node=node,
                        actor=request.user,  # type: ignore[arg-type]
                        request=request,
                        **form.cleaned_data,
                    )
                    messages.success(request, f"Remote node {node} saved.")
            except ValidationError as error:
                f.add_service_errors(form, error)
            else:
                return redirect(_settings_url("nodes"))
        else:
            # The services' rules too (egress policy, duplicates), so that the page shows
            # every problem in one round, not those only once the fields are fixed.
            try:
                services.node_problems(node=node, values=form.cleaned_data, skip=form.errors)
            except ValidationError as error:
                f.add_service_errors(form, error)
        return self._render(form, node)


class NodeDeleteView(CapabilityRequiredMixin, View):
    capability = Capability.SETTINGS_MANAGE

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        node = get_object_or_404(RemoteNode, pk=pk)
        return render(request, "configuration/node_confirm_delete.html", {"node": node})

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        node = get_object_or_404(RemoteNode, pk=pk)
        services.node_delete(node=node, actor=request.user, request=request)  # type: ignore[arg-type]
        messages.success(request, f"Remote node {node} removed.")
        return redirect(_settings_url("nodes"))


class NodeEchoView(CapabilityRequiredMixin, View):
    """POST: C-ECHO the node now; htmx gets the status cell, a plain form a redirect."""

    capability = Capability.SETTINGS_MANAGE

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        node = get_object_or_404(RemoteNode, pk=pk)
        try:
            result = services.node_echo(
                node=node,
                tenant=request.tenant,  # type: ignore[attr-defined]
                actor=request.user,  # type: ignore[arg-type]
                request=request,
            )
        except services.EchoLimited as limited:
            if request.htmx:  # type: ignore[attr-defined]
                context = {"node": node, "notice": str(limited)}
                return render(request, "configuration/partials/node_status.html", context)
            messages.error(request, str(limited))
            return redirect(_settings_url("nodes"))
        if request.htmx:  # type: ignore[attr-defined]
            return render(
                request, "configuration/partials/node_status.html", {"node": node, "result": result}
            )
        level = messages.SUCCESS if result.ok else messages.ERROR
        messages.add_message(request, level, f"C-ECHO {node}: {result.message}")
        return redirect(_settings_url("nodes"))


class RetentionFormView(CapabilityRequiredMixin, View):
    """Add or edit a retention rule. The first submit is a dry run; only the second saves."""

    capability = Capability.SETTINGS_MANAGE

    def _rule(self, pk: int | None) -> RetentionRule | None:
        return get_object_or_404(RetentionRule, pk=pk) if pk is not None else None

    def _render(
        self, form: f.RetentionRuleForm, rule: RetentionRule | None, **extra: Any
    ) -> HttpResponse:
        context = {"form": form, "rule": rule, "job_retention": _job_retention(), **extra}
        return render(self.request, "configuration/retention_form.html", context)

    def get(self, request: HttpRequest, pk: int | None = None) -> HttpResponse:
        rule = self._rule(pk)
        initial: dict[str, Any] = {"enabled": True}
        if rule is not None:
            initial = {"modality": rule.modality, "days": rule.days, "enabled": rule.enabled}
        return self._render(f.RetentionRuleForm(initial=initial, rule=rule), rule)

    def post(self, request: HttpRequest, pk: int | None = None) -> HttpResponse:
        rule = self._rule(pk)
        form = f.RetentionRuleForm(request.POST, rule=rule)
        if not form.is_valid():
            return self._render(form, rule)
        values = form.rule_values()
        stamp = [rule.pk if rule else None, values]
        token = request.POST.get("preview_token", "")
        if request.POST.get("action") == "save" and _previewed(token, stamp):
            return self._save(form, rule) or self._render(form, rule)
        if request.POST.get("action") == "save" and token:
            messages.warning(
                request,
                "The rule changed since its dry run (or the dry run is too old): "
                "check the figures below, then save.",
            )
        preview = selectors.retention_preview(modality=values["modality"], days=values["days"])
        fresh_token = signing.dumps(stamp, salt=PREVIEW_SALT)
        return self._render(form, rule, preview=preview, preview_token=fresh_token)

    def _save(self, form: f.RetentionRuleForm, rule: RetentionRule | None) -> HttpResponse | None:
        request = self.request
        confirm = bool(form.cleaned_data.get("confirm_short"))
        try:
            if rule is None:
                rule = services.retention_rule_create(
                    actor=request.user,  # type: ignore[arg-type]
                    request=request,
                    confirm_short=confirm,
                    **form.rule_values(),
                )
                messages.success(request, f"Retention rule {rule} added.")
            else:
                rule = services.retention_rule_update(
                    rule=rule,
                    actor=request.user,  # type: ignore[arg-type]
                    request=request,
                    confirm_short=confirm,
                    **form.rule_values(),
                )
                messages.success(request, f"Retention rule {rule} saved.")
        except ValidationError as error:
            f.add_service_errors(form, error)
            return None
        if not _job_retention():
            messages.warning(
                request,
                "The retention job is switched off under Jobs: no rule deletes anything "
                "until you switch it on.",
            )
        return redirect(_settings_url("retention"))


def _previewed(token: str, stamp: list[Any]) -> bool:
    try:
        return bool(signing.loads(token, salt=PREVIEW_SALT, max_age=PREVIEW_MAX_AGE) == stamp)
    except signing.BadSignature:
        return False


def _job_retention() -> bool:
    return selectors.tenant_settings().job_retention


class RetentionDeleteView(CapabilityRequiredMixin, View):
    capability = Capability.SETTINGS_MANAGE

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        rule = get_object_or_404(RetentionRule, pk=pk)
        return render(request, "configuration/retention_confirm_delete.html", {"rule": rule})

    def post(self, request: HttpRequest, pk: int) -> HttpResponse:
        rule = get_object_or_404(RetentionRule, pk=pk)
        services.retention_rule_delete(rule=rule, actor=request.user, request=request)  # type: ignore[arg-type]
        messages.success(request, f"Retention rule {rule} removed: its studies are kept.")
        return redirect(_settings_url("retention"))
