"""Writes on the tenant's archive: storage media usage for now."""

from collections.abc import Iterator

from django.utils import timezone

from studies.models import MediumKind, MediumStatus, StorageMedium
from studies.storage import MeasuredUsage, measure_usage


def media_measure_usage() -> Iterator[tuple[StorageMedium, MeasuredUsage]]:
    """Measure each filesystem medium that is not retired and store the figures."""
    media = StorageMedium.objects.filter(kind=MediumKind.FILESYSTEM).exclude(
        status__in=[MediumStatus.RETIRED, MediumStatus.OFFLINE]
    )
    for medium in media:
        usage = measure_usage(medium.root)
        StorageMedium.objects.filter(pk=medium.pk).update(
            used_bytes=usage.bytes, file_count=usage.files, usage_measured_at=timezone.now()
        )
        yield medium, usage
