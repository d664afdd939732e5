"""Ingest: every source stages files into a job; a batch engine takes them into the archive.

One module per stage: `receive` (staging, hashed and fsynced once), `parse` (pydicom, no
database), `place` (quota, media, files linked into place), `index` (one transaction of
set-based SQL per batch, identity rules), `engine` (the batch, its retries and clean-up),
`jobs` (submit, close, recover), and `outcomes` (the vocabulary every channel maps).
"""

from studies.ingest.engine import ItemResult, ingest_items_process, ingest_staged_process
from studies.ingest.jobs import (
    BATCH_SIZE,
    ingest_job_refresh,
    ingest_job_submit,
    ingest_jobs_recover,
)
from studies.ingest.outcomes import (
    OUT_OF_RESOURCES_CODES,
    STORED_OUTCOMES,
    IngestRefused,
    Refusal,
)
from studies.ingest.receive import (
    JobStaging,
    ingest_item_reject,
    ingest_item_stage,
    ingest_job_create,
)

__all__ = [
    "BATCH_SIZE",
    "OUT_OF_RESOURCES_CODES",
    "STORED_OUTCOMES",
    "IngestRefused",
    "ItemResult",
    "JobStaging",
    "Refusal",
    "ingest_item_reject",
    "ingest_item_stage",
    "ingest_items_process",
    "ingest_job_create",
    "ingest_job_refresh",
    "ingest_job_submit",
    "ingest_jobs_recover",
    "ingest_staged_process",
]
