"""The tenant's hash chain over its audit log: seals written by a periodic task, checked by
`manage.py tenant audit-verify <slug>`.

Each seal folds the digest of the seal before it with every row of its range, row by row:
`digest = SHA-256(... SHA-256(SHA-256(previous + row₁) + row₂) ...)`, a row being its
canonical JSON. Rows are sealed once they are SEAL_AFTER old, so that a transaction still
open when the seal is cut cannot commit a row inside a range already sealed. Seals and rows
are both append-only in the database; the chain is what shows an edit made around that (a
role that can disable the trigger, a restored dump, a hand-edited table).
"""

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from audit.models import AuditEvent, AuditSeal

GENESIS = "0" * 64
SEAL_AFTER = timedelta(minutes=10)
SEAL_LIMIT = 50_000  # rows per seal: a seal is one transaction, and a backlog takes several
CHUNK = 2_000


def canonical(event: AuditEvent) -> bytes:
    """The row as the chain sees it: every column, in a fixed order and spelling."""
    return json.dumps(
        [
            event.pk,
            event.at.isoformat(),
            event.actor_id,
            event.actor_name,
            event.source_address,
            event.action,
            event.object_type,
            event.object_id,
            event.outcome,
            event.details,
        ],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def fold(previous: str, events: Iterable[AuditEvent]) -> tuple[str, int]:
    """The digest after `events` (in id order) starting from `previous`, and their count."""
    digest, count = previous, 0
    for event in events:
        digest = hashlib.sha256(digest.encode() + canonical(event)).hexdigest()
        count += 1
    return digest, count


def _rows(after: int, up_to: int) -> Iterator[AuditEvent]:
    return (
        AuditEvent.objects.filter(pk__gt=after, pk__lte=up_to)
        .order_by("pk")
        .iterator(chunk_size=CHUNK)
    )


def _link_end(after: int, cutoff: datetime) -> int | None:
    """The id that ends the next link: the SEAL_LIMIT-th ripe row after `after`, else the
    last ripe one; None when no row is ripe."""
    ripe = AuditEvent.objects.filter(pk__gt=after, at__lt=cutoff)
    nth = ripe.order_by("pk").values_list("pk", flat=True)[SEAL_LIMIT - 1 : SEAL_LIMIT]
    return next(iter(nth), None) or ripe.aggregate(end=Max("pk"))["end"]


def audit_seal() -> list[AuditSeal]:
    """Seal the active tenant's rows that are old enough, in links of at most SEAL_LIMIT."""
    sealed: list[AuditSeal] = []
    with transaction.atomic():
        # One sealer per tenant at a time (advisory locks are database-wide: the key names the
        # schema); a second one waits, then finds nothing to do.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtext('audit-seal:' || current_schema()))"
            )
        last = AuditSeal.objects.order_by("-last_event_id").first()
        after, previous = (last.last_event_id, last.digest) if last else (0, GENESIS)
        cutoff = timezone.now() - SEAL_AFTER
        while (end := _link_end(after, cutoff)) is not None:
            digest, count = fold(previous, _rows(after, end))
            sealed.append(
                AuditSeal.objects.create(
                    first_event_id=after + 1,
                    last_event_id=end,
                    events=count,
                    previous=previous,
                    digest=digest,
                )
            )
            after, previous = end, digest
    return sealed


@dataclass(frozen=True)
class Verification:
    seals: int
    events: int
    unsealed: int
    broken: str  # empty when the chain holds: else the first broken link, in words

    @property
    def ok(self) -> bool:
        return not self.broken


def audit_verify() -> Verification:
    """Recompute the active tenant's chain, link by link, and name the first that breaks."""
    after, previous, seals, events = 0, GENESIS, 0, 0
    for seal in AuditSeal.objects.order_by("last_event_id").iterator(chunk_size=CHUNK):
        where = f"seal #{seal.pk} (events #{seal.first_event_id} to #{seal.last_event_id})"
        if seal.previous != previous or seal.first_event_id != after + 1:
            broken = f"{where} does not follow the seal before it: a seal was changed or removed"
            return Verification(seals, events, _unsealed(after), broken)
        digest, count = fold(previous, _rows(after, seal.last_event_id))
        if count != seal.events or digest != seal.digest:
            change = (
                f"{seal.events - count} row(s) removed"
                if count < seal.events
                else f"{count - seal.events} row(s) added"
                if count > seal.events
                else "a row changed"
            )
            broken = f"{where} no longer matches its rows: {change}"
            return Verification(seals, events, _unsealed(after), broken)
        after, previous, seals, events = seal.last_event_id, seal.digest, seals + 1, events + count
    return Verification(seals, events, _unsealed(after), "")


def _unsealed(after: int) -> int:
    return AuditEvent.objects.filter(pk__gt=after).count()
