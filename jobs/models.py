"""One row per run of a periodic job in the active schema, unique per job and period."""

from django.db import models


class JobStatus(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class JobRun(models.Model):
    """A run of `job` for `period`. The unique key is what stops a second beat double-running."""

    job = models.CharField(max_length=64)
    period = models.CharField(max_length=32, help_text="The schedule slot, e.g. 2026-11-23T14.")
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.RUNNING)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    counts = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["job", "period"], name="jobrun_once_per_period")
        ]

    def __str__(self) -> str:
        return f"{self.job}@{self.period}: {self.status}"

    @property
    def error_summary(self) -> str:
        """What failed, without the traceback and the message (which name files, hosts and
        code): the exception's class, e.g. "Failed with OSError". Admins see the whole text."""
        last = next((line for line in reversed(self.error.splitlines()) if line.strip()), "")
        name = last.split(":", 1)[0].strip().rsplit(".", 1)[-1]
        return f"Failed with {name}" if name.isidentifier() else "Failed"
