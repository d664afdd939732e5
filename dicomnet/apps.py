"""App config for the DICOM network gateway (no models; it routes from the public schema)."""

from django.apps import AppConfig


class DicomnetConfig(AppConfig):
    name = "dicomnet"
    verbose_name = "DICOM network"
