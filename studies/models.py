"""Storage media of the active tenant (its archive index joins them in later issues)."""

from django.db import models


class MediumKind(models.TextChoices):
    FILESYSTEM = "filesystem", "Filesystem"
    S3 = "s3", "Object storage (S3)"


class MediumStatus(models.TextChoices):
    ONLINE = "online", "Online"
    READ_ONLY = "read-only", "Read-only"
    OFFLINE = "offline", "Offline"
    RETIRED = "retired", "Retired"


class StorageMedium(models.Model):
    """A disk or bucket that holds the tenant's DICOM files, with its capacity and watermarks."""

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(
        max_length=16, choices=MediumKind.choices, default=MediumKind.FILESYSTEM
    )
    root = models.CharField(max_length=1024, help_text="Directory (or bucket/prefix).")
    capacity_bytes = models.BigIntegerField()
    high_watermark = models.PositiveSmallIntegerField(default=90)
    low_watermark = models.PositiveSmallIntegerField(default=80)
    status = models.CharField(
        max_length=16, choices=MediumStatus.choices, default=MediumStatus.ONLINE
    )
    priority = models.IntegerField(default=0, help_text="Higher priority media fill first.")
    used_bytes = models.BigIntegerField(default=0)
    file_count = models.BigIntegerField(default=0)
    usage_measured_at = models.DateTimeField(null=True, blank=True)
    last_probe_at = models.DateTimeField(null=True, blank=True)
    last_probe_ok = models.BooleanField(null=True, blank=True)
    last_probe_message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-priority", "name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(capacity_bytes__gt=0), name="medium_capacity_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(
                    low_watermark__gt=0,
                    low_watermark__lt=models.F("high_watermark"),
                    high_watermark__lte=100,
                ),
                name="medium_watermarks_ordered",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def used_percent(self) -> float:
        return 100.0 * self.used_bytes / self.capacity_bytes if self.capacity_bytes else 0.0

    @property
    def above_high_watermark(self) -> bool:
        return self.used_percent >= self.high_watermark

    @property
    def holds_data(self) -> bool:
        """As last measured; deletion measures again before it trusts this."""
        return self.used_bytes > 0 or self.file_count > 0
