"""Web upload of DICOM files into an ingest job."""

from django.views.generic import TemplateView

from accounts.permissions import Capability, CapabilityRequiredMixin


class UploadView(CapabilityRequiredMixin, TemplateView):
    capability = Capability.INGEST_STORE
    template_name = "studies/upload.html"
