"""Parsing: each staged item of a batch becomes a `Candidate` with its index fields, or a
refusal with a reason. No database here; the pure rules live in `studies/dicom.py`."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from studies.dicom import DicomParseError, ParsedInstance, parse_file
from studies.ingest.outcomes import IngestRefused, Refusal
from studies.models import StorageMedium
from studies.storage import file_sha256, is_inside

if TYPE_CHECKING:
    from studies.media.objectstore import StoredObject


@dataclass
class Candidate:
    """One item on its way through a batch: what was received, what it holds, where it went
    and what became of it."""

    item_id: int
    job_id: int
    name: str
    staged: Path
    size: int
    sha256: str
    source: str = ""
    parsed: ParsedInstance | None = None
    refusal: IngestRefused | None = None
    # Decided by the index stage, inside its transaction
    outcome: str = ""
    reason: str = ""
    medium: StorageMedium | None = None
    relative_path: str = ""
    created_file: "Path | StoredObject | None" = None  # what this run placed on a medium
    quarantined: Path | None = None
    kept_bytes: int = 0  # what `quarantined` holds
    replaced: dict[str, object] = field(default_factory=dict)  # the earlier copy's row
    staged_inside: bool = False  # the staged file was found inside the tenant's root

    @property
    def instance(self) -> ParsedInstance:
        """The parsed fields, once parsing succeeded (the index stage sees no other)."""
        if self.parsed is None:
            raise ValueError(f"item {self.item_id} was not parsed")
        return self.parsed

    @property
    def target_medium(self) -> StorageMedium:
        """The medium the file was placed on, once it was."""
        if self.medium is None:
            raise ValueError(f"item {self.item_id} was not placed")
        return self.medium

    def refuse(self, code: str, message: str) -> None:
        self.refusal = IngestRefused(code, message)


def candidate_parse(candidate: Candidate, *, root: Path) -> None:
    """Fill `candidate.parsed`, or `candidate.refusal` with why the file cannot enter;
    `root` is the tenant's storage root, where every staged file must lie."""
    staged = candidate.staged
    if not is_inside(root, staged, root_resolved=True):
        candidate.refuse(
            Refusal.STAGING_LOST, "The staged file lies outside this tenant's storage; not touched."
        )
        return
    if not staged.is_file():
        candidate.refuse(Refusal.STAGING_LOST, "The uploaded file is missing from staging.")
        return
    candidate.staged_inside = True
    if candidate.parsed is not None:  # parsed already where it was received (the gateway)
        return
    try:
        candidate.parsed = parse_file(staged, max_bytes=settings.PORTAL_MAX_INSTANCE_BYTES)
    except DicomParseError as error:
        candidate.refuse(error.code, error.message)
        return
    if not candidate.sha256:  # staged by an older release, before hashing on receipt
        candidate.sha256 = file_sha256(staged)
        candidate.size = staged.stat().st_size
