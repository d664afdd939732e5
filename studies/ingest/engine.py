"""The batch engine: staged items in, outcomes out, in a fixed number of statements a batch.

`ingest_items_process` claims the batch's pending items (counting the attempt first, so a
file that kills its worker is refused after a few tries instead of forever), parses them,
then runs the index stage's one transaction, retried when a concurrent batch created a row
first. After the commit it only removes what is no longer needed: staged files, an earlier
copy that was replaced, files placed for a run that lost a race. Safe to run again after
a crash anywhere: an item is finished exactly once, under its row lock.
"""

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from django.db import OperationalError, transaction
from django.db.models import Q

from portal.metrics import ingest_observe
from portal.schemas import current_tenant
from studies.dicom import ParsedInstance
from studies.ingest.held import QuarantineAllowance
from studies.ingest.index import IndexRaced, claim_pending, index_batch
from studies.ingest.outcomes import IngestRefused, Refusal
from studies.ingest.parse import Candidate, candidate_parse
from studies.ingest.receive import quarantine_keep, quarantine_target
from studies.models import IngestItem, Instance, ItemOutcome
from studies.storage import (
    StoragePathError,
    fsync_directories,
    is_inside,
    medium_remove,
)

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
MAX_RACES = 5


@dataclass(frozen=True)
class ItemResult:
    outcome: str
    reason_code: str = ""
    reason: str = ""


def ingest_items_process(*, item_ids: list[int]) -> dict[int, ItemResult]:
    """Take a batch of staged items into the archive; returns each item's result."""
    candidates, attempts = _claim(item_ids)
    results: dict[int, ItemResult] = {}
    if len(candidates) > 1 and any(attempts[c.item_id] > 1 for c in candidates):
        # This batch ran before and did not finish: one item at a time now, so a file
        # that kills its worker takes only itself down.
        for candidate in candidates:
            results.update(_process([candidate]))
    elif candidates:
        results = _process(candidates)
    missing = [pk for pk in item_ids if pk not in results]
    if missing:  # finished earlier, or by another worker meanwhile
        for pk, outcome, code, reason in IngestItem.objects.filter(pk__in=missing).values_list(
            "pk", "outcome", "reason_code", "reason"
        ):
            results[pk] = ItemResult(outcome, code, reason)
    return results


def ingest_staged_process(
    *, items: list[IngestItem], source: str, parsed: dict[int, ParsedInstance] | None = None
) -> dict[int, ItemResult]:
    """Take items staged by `JobStaging(claimed=True)` into the archive: their first attempt
    is counted in their rows, so there is no claim round trip (the gateway's path, where
    each C-STORE waits for its answer and stages and indexes in one transaction). `parsed`:
    what the caller parsed already, by item id (the file is not read again)."""
    candidates = [
        Candidate(
            item_id=item.pk,
            job_id=item.job_id,
            name=item.name,
            staged=Path(item.staged_path),
            size=item.size_bytes,
            sha256=item.sha256,
            source=source,
            parsed=(parsed or {}).get(item.pk),
        )
        for item in items
        if item.outcome == ItemOutcome.PENDING
    ]
    results = _process(candidates) if candidates else {}
    for item in items:
        if item.pk not in results:  # refused while staging
            results[item.pk] = ItemResult(item.outcome, item.reason_code, item.reason)
    return results


def _claim(item_ids: list[int]) -> tuple[list[Candidate], dict[int, int]]:
    """Count an attempt on each pending item (committed before the work starts)."""
    if not item_ids:
        return [], {}
    rows = claim_pending(item_ids)
    candidates, attempts = [], {}
    for pk, job_id, name, staged_path, size, sha256, tries, source in rows:
        candidate = Candidate(
            item_id=pk,
            job_id=job_id,
            name=name,
            staged=Path(staged_path or "."),
            size=size,
            sha256=sha256,
            source=source,
        )
        if not staged_path:
            candidate.refuse(Refusal.STAGING_LOST, "The file never reached staging.")
        elif tries > MAX_ATTEMPTS:
            candidate.refuse(
                Refusal.WORKER_LOST,
                f"Processing this file stopped its worker {tries - 1} times; it is refused "
                "and kept in quarantine.",
            )
        candidates.append(candidate)
        attempts[pk] = tries
    return candidates, attempts


def _process(candidates: list[Candidate]) -> dict[int, ItemResult]:
    started = time.monotonic()
    tenant = current_tenant()
    # Once per batch: every staged and quarantined file lies below it.
    root = Path(tenant.storage_root).resolve()
    for candidate in candidates:
        if candidate.refusal is None:
            candidate_parse(candidate, root=root)
        elif candidate.staged != Path("."):  # refused unread (worker lost): still kept
            candidate.staged_inside = candidate.staged.is_file() and is_inside(
                root, candidate.staged, root_resolved=True
            )
    parsed_state = [(c.refusal, c.sha256, c.size) for c in candidates]
    quarantine_dirs: set[Path] = set()

    def quarantine(candidate: Candidate, allowance: QuarantineAllowance) -> None:
        staged = candidate.staged
        if not (candidate.staged_inside and staged.is_file()):
            return
        target = quarantine_target(candidate.item_id, candidate.job_id, candidate.name, root=root)
        refusal = candidate.refusal
        code = refusal.code if refusal else ""
        kept = quarantine_keep(staged, target, code=code, allowance=allowance)
        if kept is None:
            if refusal is not None:
                candidate.refusal = IngestRefused(code, refusal.message + allowance.refusal_note)
            return
        candidate.quarantined, candidate.kept_bytes = target, kept
        quarantine_dirs.add(target.parent)

    for race in range(MAX_RACES):
        try:
            with transaction.atomic():
                mine, index = index_batch(
                    candidates,
                    quota_bytes=tenant.quota_bytes,
                    quarantine=quarantine,
                )
                fsync_directories(quarantine_dirs)
                if index.new_series_ids:
                    from studies.index.services import thumbnail_queue_for_new_series

                    thumbnail_queue_for_new_series(index.new_series_ids)
            break
        except (IndexRaced, OperationalError) as error:
            if isinstance(error, OperationalError) and not _is_deadlock(error):
                _discard_unindexed(candidates)
                raise
            logger.info("ingest batch raced (%s), deciding again (%d)", error, race + 1)
            for candidate, (refusal, sha256, size) in zip(candidates, parsed_state, strict=True):
                candidate.refusal, candidate.sha256, candidate.size = refusal, sha256, size
                candidate.outcome, candidate.reason, candidate.medium = "", "", None
                candidate.relative_path, candidate.replaced = "", {}
                if candidate.quarantined is not None:
                    candidate.quarantined.unlink(missing_ok=True)
                    candidate.quarantined, candidate.kept_bytes = None, 0
            if race == MAX_RACES - 1:
                _discard_unindexed(candidates)
                raise
        except BaseException:
            _discard_unindexed(candidates)
            raise
    _after_commit(candidates, mine, index.media, root)
    seconds = time.monotonic() - started
    for candidate in mine:
        ingest_observe(source=candidate.source, outcome=candidate.outcome, seconds=seconds)
    return {
        c.item_id: ItemResult(
            c.outcome,
            c.refusal.code if c.refusal else "",
            c.refusal.message if c.refusal else c.reason,
        )
        for c in mine
    }


def _is_deadlock(error: OperationalError) -> bool:
    return type(error.__cause__).__name__ in {"DeadlockDetected", "SerializationFailure"}


def _referenced(candidate: Candidate) -> bool:
    medium = candidate.medium
    return (
        medium is not None
        and Instance.objects.filter(medium=medium, relative_path=candidate.relative_path).exists()
    )


def _discard_unindexed(candidates: list[Candidate]) -> None:
    """After a failed run: files it placed that no committed row points at are removed."""
    for candidate in candidates:
        if candidate.created_file is not None and not _referenced(candidate):
            candidate.created_file.unlink(missing_ok=True)
        if candidate.quarantined is not None:
            candidate.quarantined.unlink(missing_ok=True)


def _after_commit(
    candidates: list[Candidate], mine: list[Candidate], media: dict, root: Path
) -> None:
    finished = {c.item_id for c in mine}
    for candidate in candidates:
        kept = candidate.item_id in finished and candidate.outcome in (
            ItemOutcome.STORED,
            ItemOutcome.REPLACED,
        )
        if candidate.created_file is not None and not kept and not _referenced(candidate):
            candidate.created_file.unlink(missing_ok=True)
        if candidate.item_id not in finished:
            continue
        if candidate.staged_inside:
            candidate.staged.unlink(missing_ok=True)
        if candidate.outcome == ItemOutcome.REPLACED and candidate.replaced.get("id"):
            _remove_replaced(candidate, media)


def _remove_replaced(candidate: Candidate, media: dict) -> None:
    old = candidate.replaced
    medium = media.get(old["medium_id"])
    if medium is None:
        return
    same = old["medium_id"] == candidate.target_medium.pk and old["relative_path"] == (
        candidate.relative_path
    )
    if same:
        return
    try:
        medium_remove(medium, str(old["relative_path"]))
    except (StoragePathError, OSError):
        logger.warning("could not remove the replaced copy %s", old["relative_path"])


def pending_item_ids(job_id: int) -> list[int]:
    return list(
        IngestItem.objects.filter(Q(job_id=job_id) & Q(outcome=ItemOutcome.PENDING))
        .order_by("pk")
        .values_list("pk", flat=True)
    )


__all__ = [
    "IngestRefused",
    "ItemResult",
    "ingest_items_process",
    "ingest_staged_process",
    "pending_item_ids",
]
