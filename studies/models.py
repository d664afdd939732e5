"""The tenant's archive: storage media, the DICOM index and ingest jobs."""

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import OpClass
from django.db import models
from django.db.models.functions import Upper


class MediumKind(models.TextChoices):
    FILESYSTEM = "filesystem", "Filesystem"
    S3 = "s3", "Object storage (S3)"


class AddressingStyle(models.TextChoices):
    PATH = "path", "Path style (endpoint/bucket/key)"
    VIRTUAL = "virtual", "Virtual host (bucket.endpoint/key)"


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
    root = models.CharField(
        max_length=1024, help_text="Directory, or s3://bucket/key-prefix/ for object storage."
    )
    # Object storage only (kind s3): where the bucket is and how to sign for it. The secret
    # key is sealed (portal/sealing.py) and never shown back.
    endpoint_url = models.CharField(max_length=255, blank=True)
    region = models.CharField(max_length=64, blank=True)
    bucket = models.CharField(max_length=63, blank=True)
    key_prefix = models.CharField(
        max_length=512, blank=True, help_text="The prefix every object key of this medium has."
    )
    addressing_style = models.CharField(
        max_length=8, choices=AddressingStyle.choices, default=AddressingStyle.PATH, blank=True
    )
    access_key_id = models.CharField(max_length=128, blank=True)
    secret_key_sealed = models.TextField(blank=True)
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


class Patient(models.Model):
    """A patient as the files name them; DICOM has no better identity than these three."""

    patient_id = models.CharField(max_length=64, blank=True)
    name = models.CharField(max_length=324, blank=True)
    birth_date = models.DateField(null=True, blank=True)
    sex = models.CharField(max_length=16, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["patient_id", "name", "birth_date"],
                nulls_distinct=False,
                name="patient_identity",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.patient_id})"


class Study(models.Model):
    """A study with the patient fields copied in, so study searches need no join."""

    study_instance_uid = models.CharField(max_length=64, unique=True)
    patient_record = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="studies")
    patient_name = models.CharField(max_length=324, blank=True)
    patient_id = models.CharField(max_length=64, blank=True)
    patient_id_issuer = models.CharField(
        max_length=64, blank=True, help_text="Issuer of Patient ID (0010,0021)."
    )
    patient_birth_date = models.DateField(null=True, blank=True)
    patient_sex = models.CharField(max_length=16, blank=True)
    attribute_conflict = models.CharField(
        max_length=512,
        blank=True,
        help_text="Set when an instance of this study named its patient differently "
        "(same Patient ID) and the tenant's policy accepted it.",
    )
    study_date = models.DateField(null=True, blank=True)
    study_time = models.TimeField(null=True, blank=True)
    accession_number = models.CharField(max_length=64, blank=True)
    study_id = models.CharField(max_length=16, blank=True)
    description = models.CharField(max_length=64, blank=True)
    referring_physician_name = models.CharField(max_length=324, blank=True)
    modalities = ArrayField(models.CharField(max_length=16), default=list, blank=True)
    num_series = models.PositiveIntegerField(default=0)
    num_instances = models.PositiveIntegerField(default=0)
    size_bytes = models.BigIntegerField(default=0)
    received_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-study_date", "-received_at"]
        verbose_name_plural = "studies"
        indexes = [
            models.Index(fields=["patient_id"]),
            models.Index(fields=["accession_number"]),
            models.Index(fields=["study_date"]),
            models.Index(fields=["received_at"]),
            # text_pattern_ops: serves `UPPER(name) LIKE 'DOE%'` (wildcards) and equality.
            models.Index(
                OpClass(Upper("patient_name"), name="text_pattern_ops"),
                name="study_patient_name_pattern",
            ),
        ]

    def __str__(self) -> str:
        return self.study_instance_uid


class Series(models.Model):
    series_instance_uid = models.CharField(max_length=64, unique=True)
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="series")
    modality = models.CharField(max_length=16, blank=True)
    series_number = models.IntegerField(null=True, blank=True)
    description = models.CharField(max_length=64, blank=True)
    body_part_examined = models.CharField(max_length=16, blank=True)
    num_instances = models.PositiveIntegerField(default=0)
    size_bytes = models.BigIntegerField(default=0)
    thumbnail = models.CharField(
        max_length=255, blank=True, help_text="Path below the tenant root, or empty."
    )
    thumbnail_error = models.CharField(max_length=255, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["series_number", "received_at"]
        verbose_name_plural = "series"

    def __str__(self) -> str:
        return self.series_instance_uid


class Instance(models.Model):
    """One stored object and where its bytes are: medium, path below its root, size, hash."""

    sop_instance_uid = models.CharField(max_length=64, unique=True)
    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="instances")
    sop_class_uid = models.CharField(max_length=64)
    transfer_syntax_uid = models.CharField(max_length=64)
    instance_number = models.IntegerField(null=True, blank=True)
    rows = models.PositiveIntegerField(null=True, blank=True)
    columns = models.PositiveIntegerField(null=True, blank=True)
    number_of_frames = models.PositiveIntegerField(null=True, blank=True)
    bits_allocated = models.PositiveSmallIntegerField(null=True, blank=True)
    medium = models.ForeignKey(StorageMedium, on_delete=models.PROTECT, related_name="instances")
    relative_path = models.CharField(max_length=255)
    size_bytes = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["instance_number", "sop_instance_uid"]
        # Instances received per day: the dashboard's activity and usage metering.
        indexes = [models.Index(fields=["received_at"], name="instance_received_at")]
        constraints = [
            models.UniqueConstraint(
                fields=["medium", "relative_path"], name="instance_file_unique"
            ),
        ]

    def __str__(self) -> str:
        return self.sop_instance_uid


class IngestSource(models.TextChoices):
    UPLOAD = "upload", "Web upload"
    REST = "rest", "REST API"
    STOW = "stow", "STOW-RS"
    DIMSE = "dimse", "DICOM C-STORE"
    FOLDER = "folder", "Server folder"


class IngestJobStatus(models.TextChoices):
    RECEIVING = "receiving", "Receiving"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class IngestJob(models.Model):
    """One delivery of files from one source; its items say what became of each file."""

    source = models.CharField(max_length=16, choices=IngestSource.choices)
    status = models.CharField(
        max_length=16, choices=IngestJobStatus.choices, default=IngestJobStatus.RECEIVING
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # The API token that sent the files, if one did: a `store` token sees only its own jobs.
    token = models.ForeignKey(
        "accounts.ApiToken", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    description = models.CharField(max_length=255, blank=True)
    total = models.PositiveIntegerField(default=0)
    stored = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    progressed_at = models.DateTimeField(
        null=True, blank=True, help_text="Last time an item of the job was processed."
    )
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"ingest #{self.pk} ({self.source})"

    @property
    def processed(self) -> int:
        return self.stored + self.duplicates + self.rejected

    @property
    def percent(self) -> int:
        return round(100 * self.processed / self.total) if self.total else 0


class ItemOutcome(models.TextChoices):
    PENDING = "pending", "Pending"
    STORED = "stored", "Stored"
    REPLACED = "replaced", "Stored (replaced the earlier copy)"
    DUPLICATE = "duplicate", "Duplicate (kept the earlier copy)"
    REJECTED = "rejected", "Rejected"


class IngestItem(models.Model):
    """One file of a job: staged on disk until processed, then stored, duplicate or rejected."""

    job = models.ForeignKey(IngestJob, on_delete=models.CASCADE, related_name="items")
    name = models.CharField(max_length=512, help_text="The file's name as the sender gave it.")
    staged_path = models.CharField(max_length=512, blank=True)
    size_bytes = models.BigIntegerField(default=0)
    outcome = models.CharField(
        max_length=16, choices=ItemOutcome.choices, default=ItemOutcome.PENDING
    )
    reason = models.TextField(blank=True)
    reason_code = models.CharField(max_length=32, blank=True)
    sop_instance_uid = models.CharField(max_length=64, blank=True)
    study_instance_uid = models.CharField(max_length=64, blank=True)
    quarantine_path = models.CharField(max_length=512, blank=True)
    kept_bytes = models.BigIntegerField(
        default=0,
        help_text="Bytes the item's file holds in quarantine (counted against the quota; "
        "0 once purged or never kept).",
    )
    sha256 = models.CharField(max_length=64, blank=True, help_text="Computed while receiving.")
    attempts = models.PositiveSmallIntegerField(
        default=0,
        help_text="Processing runs started; an item that keeps killing its worker "
        "is refused after a few.",
    )
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["job", "outcome"]),
            # What staging and quarantine hold (studies/ingest/held.py): summed from these
            # two small indexes alone, never from the whole history of items.
            models.Index(
                fields=["outcome"],
                include=["size_bytes"],
                condition=models.Q(outcome=ItemOutcome.PENDING),
                name="ingestitem_staged",
            ),
            models.Index(
                fields=["processed_at"],
                include=["kept_bytes"],
                condition=models.Q(kept_bytes__gt=0),
                name="ingestitem_quarantined",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name}: {self.outcome}"


class SendJobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Sending"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class NodeJob(models.Model):
    """What the jobs with one of the tenant's remote nodes share: the node, who asked and when,
    how it ended. Subclasses count `total` and define `processed`."""

    node = models.ForeignKey(
        "configuration.RemoteNode", null=True, on_delete=models.SET_NULL, related_name="+"
    )
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    status: str
    total: int

    class Meta:
        abstract = True
        ordering = ["-created_at", "-id"]

    @property
    def processed(self) -> int:
        raise NotImplementedError

    @property
    def percent(self) -> int:
        return 100 if not self.total else min(100, self.processed * 100 // self.total)

    @property
    def is_over(self) -> bool:
        return self.status in ("done", "failed")


class SendJob(NodeJob):
    """A study, or one of its series, sent to a remote node by C-STORE (the archive as SCU).

    Run by a worker (dicomnet/send.py); the page follows its counters. Failures keep the SOP
    Instance UID and the reason of each instance that did not arrive (at most MAX_FAILURES).
    """

    MAX_FAILURES = 1000

    destination = models.CharField(max_length=300)  # "AE@host:port" when it was asked for
    study_instance_uid = models.CharField(max_length=64)
    series_instance_uid = models.CharField(max_length=64, blank=True)
    description = models.CharField(max_length=200, blank=True)
    status = models.CharField(
        max_length=16, choices=SendJobStatus.choices, default=SendJobStatus.QUEUED
    )
    total = models.PositiveIntegerField(default=0)
    sent = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    failures = models.JSONField(default=list, blank=True)

    class Meta(NodeJob.Meta):
        pass

    def __str__(self) -> str:
        return f"send #{self.pk} to {self.destination}"

    @property
    def processed(self) -> int:
        return self.sent + self.failed


class RetrieveJobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Retrieving"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class RetrieveJob(NodeJob):
    """A study pulled from a remote node: C-MOVE as SCU, the node sending the study to this
    archive's own AE title, where the gateway receives and ingests it like any C-STORE.

    Run by a worker (dicomnet/retrieve.py); the counters are the node's sub-operation counts
    as its C-MOVE responses give them.
    """

    source = models.CharField(max_length=300)  # "AE@host:port" when it was asked for
    study_instance_uid = models.CharField(max_length=64)
    description = models.CharField(max_length=200, blank=True)
    status = models.CharField(
        max_length=16, choices=RetrieveJobStatus.choices, default=RetrieveJobStatus.QUEUED
    )
    total = models.PositiveIntegerField(default=0)
    completed = models.PositiveIntegerField(default=0)
    warning = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)

    class Meta(NodeJob.Meta):
        pass

    def __str__(self) -> str:
        return f"retrieve #{self.pk} from {self.source}"

    @property
    def processed(self) -> int:
        return self.completed + self.warning + self.failed
