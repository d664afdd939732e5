"""/audit/: the log with filters and pages, and the same selection as CSV."""

import json
from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views import View
from django.views.generic import ListView

from accounts.permissions import Capability, CapabilityRequiredMixin
from audit.forms import AuditFilterForm
from audit.presentation import audit_present
from audit.selectors import audit_actions, audit_search
from audit.services import audit_record
from portal.csv_export import csv_lines, spreadsheet_safe
from portal.pagination import ClampedPagesMixin

CSV_COLUMNS = [
    "time",
    "user",
    "source_address",
    "action",
    "object_type",
    "object_id",
    "outcome",
    "details",
]


class AuditListView(CapabilityRequiredMixin, ClampedPagesMixin, ListView):
    capability = Capability.AUDIT_VIEW
    template_name = "audit/audit_list.html"
    context_object_name = "events"
    paginate_by = 50

    def get_queryset(self):
        self.form = AuditFilterForm(self.request.GET or None)
        # A rejected filter lists nothing: the whole log would look like the answer.
        self.rejected = self.form.is_bound and not self.form.is_valid()
        found = audit_search(self.form.criteria()).select_related("actor")
        return found.none() if self.rejected else found

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        query = self.request.GET.copy()
        query.pop("page", None)
        context = super().get_context_data(
            form=self.form,
            actions=audit_actions(),
            filter_query=query.urlencode(),
            rejected=self.rejected,
            **kwargs,
        )
        audit_present(context["events"])  # names and links of the page's objects
        return context


def _csv_rows(events: Any) -> Iterator[str]:
    def rows() -> Iterator[list[str]]:
        for event in events.iterator(chunk_size=2000):
            texts = (
                event.actor_name,
                event.source_address or "",
                event.action,
                event.object_type,
                event.object_id,
                event.outcome,
            )
            details = json.dumps(event.details, sort_keys=True) if event.details else ""
            yield [event.at.isoformat(), *map(spreadsheet_safe, texts), details]

    return csv_lines(CSV_COLUMNS, rows())


class AuditExportView(CapabilityRequiredMixin, View):
    capability = Capability.AUDIT_VIEW

    def get(self, request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
        form = AuditFilterForm(request.GET or None)
        if form.is_bound and not form.is_valid():
            problems = "; ".join(
                f"{name}: {' '.join(str(e) for e in errors)}"
                for name, errors in form.errors.items()
            )
            return HttpResponse(
                f"The filter was not applied, so nothing was exported. {problems}",
                status=400,
                content_type="text/plain; charset=utf-8",
            )
        events = audit_search(form.criteria())
        # Exporting the log is itself an auditable act (the export may leave the building).
        audit_record(
            action="audit.export",
            request=request,
            object_type="auditevent",
            details={
                "filters": {k: v for k, v in request.GET.items() if v},
                "rows": events.count(),
            },
        )
        response = StreamingHttpResponse(_csv_rows(events), content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="audit-log.csv"'
        return response
