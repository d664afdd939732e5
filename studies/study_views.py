"""The study list and study pages."""

from django.views.generic import ListView

from accounts.permissions import Capability, CapabilityRequiredMixin
from studies.models import Study


class StudyListView(CapabilityRequiredMixin, ListView):
    capability = Capability.STUDIES_VIEW
    template_name = "studies/study_list.html"
    context_object_name = "studies"
    paginate_by = 50
    queryset = Study.objects.order_by("-study_date", "-received_at")
