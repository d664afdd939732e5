"""Indexing: one transaction per batch decides every candidate and writes the whole index with
set-based SQL (a fixed number of statements, whatever the batch size).

Inside the transaction, in this order (the lock order every batch follows, so concurrent
batches of one study wait for each other instead of deadlocking): the batch's pending items,
an advisory lock per SOP Instance UID, then its existing studies, series and instances by
UID, `FOR UPDATE`. With those rows held,
each candidate is decided (identity rules, duplicates, quota, a medium), its file linked into
place, and the rows written: patients, studies, series and instances by `INSERT ... ON
CONFLICT`, counters once per study and series, media usage once per medium, item outcomes
and job counters in one statement each. The reads (the tenant's policies and media included,
so the whole batch decides on one snapshot) go to PostgreSQL as one message and the writes
after the new studies and series as another (`Statements`). The directories the batch
linked into are fsynced before the commit, so no committed row points at a file a crash
could lose.

A new row another batch committed first (`ON CONFLICT` skipped it) makes the batch run its
transaction again, deciding against the row that won; its files are found in place.
"""

import datetime
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import connection
from django.utils import timezone

from configuration.models import (
    SINGLETON_ID,
    DuplicatePolicy,
    PatientMismatchPolicy,
    TenantSettings,
)
from studies.ingest.held import QuarantineAllowance, held_of, held_read
from studies.ingest.outcomes import IngestRefused, Refusal
from studies.ingest.parse import Candidate
from studies.ingest.place import Room
from studies.ingest.sql import Statements, execute, table, values_sql
from studies.models import (
    IngestItem,
    IngestJob,
    Instance,
    ItemOutcome,
    Patient,
    Series,
    StorageMedium,
    Study,
)
from studies.storage import fsync_directories


class IndexRaced(Exception):
    """A row this batch meant to create was committed by another batch meanwhile."""


@dataclass
class StudyState:
    id: int | None
    patient_id: str
    issuer: str
    patient_name: str
    birth_date: datetime.date | None
    modalities: list[str]
    conflict: str
    new_series: int = 0
    instances: int = 0
    size: int = 0
    parsed: Any = None  # the first candidate's fields, for a new study
    touched: bool = False  # an instance of this batch joined it


@dataclass
class SeriesState:
    id: int | None
    study_uid: str
    instances: int = 0
    size: int = 0
    parsed: Any = None


@dataclass
class InstanceState:
    id: int | None
    sha256: str
    size: int
    medium_id: int
    relative_path: str
    series_uid: str
    study_uid: str
    series_id: int | None = None


@dataclass
class BatchIndex:
    """What the transaction wrote, for the work after commit."""

    new_series_ids: list[int] = field(default_factory=list)
    media: dict[int, StorageMedium] = field(default_factory=dict)


def claim_pending(item_ids: list[int]) -> list[tuple[Any, ...]]:
    """Count an attempt on each pending item, committed before the work starts; returns
    (id, job_id, name, staged_path, size, sha256, attempts, job source) rows by id."""
    rows = execute(
        f"UPDATE {table(IngestItem)} it SET attempts = it.attempts + 1 "
        f"FROM {table(IngestJob)} j WHERE j.id = it.job_id "
        "AND it.id = ANY(%s::bigint[]) AND it.outcome = %s RETURNING it.id, it.job_id, "
        "it.name, it.staged_path, it.size_bytes, it.sha256, it.attempts, j.source",
        [list(item_ids), ItemOutcome.PENDING],
    )
    return sorted(rows)


# -- reading what the batch touches, locked ----------------------------------------------------


def _lock_pending(reads: Statements, item_ids: list[int]) -> int:
    return reads.add(
        f"SELECT id FROM {table(IngestItem)} WHERE id = ANY(%s::bigint[]) AND outcome = %s "
        "ORDER BY id FOR UPDATE",
        [item_ids, ItemOutcome.PENDING],
    )


# Namespace of the per-SOP-Instance-UID advisory locks (any constant; one per purpose).
PLACEMENT_LOCK_SPACE = 0x1C0E


def _lock_placements(reads: Statements, sop_uids: list[str]) -> int:
    """Hold a transaction lock per SOP Instance UID while files are placed: a file under a
    name no committed row points at is then an orphan, never another batch's fresh file."""
    return reads.add(
        "SELECT pg_advisory_xact_lock(%s, k) FROM "
        "(SELECT DISTINCT hashtext(u) AS k FROM unnest(%s::text[]) AS u ORDER BY 1) AS keys",
        [PLACEMENT_LOCK_SPACE, sop_uids],
    )


def _lock_studies(reads: Statements, uids: list[str]) -> int:
    return reads.add(
        "SELECT id, study_instance_uid, patient_id, patient_id_issuer, patient_name, "
        f"patient_birth_date, modalities, attribute_conflict FROM {table(Study)} "
        "WHERE study_instance_uid = ANY(%s::varchar[]) ORDER BY study_instance_uid FOR UPDATE",
        [uids],
    )


def _studies(rows: list[tuple[Any, ...]]) -> dict[str, StudyState]:
    return {
        uid: StudyState(
            id=pk,
            patient_id=pid,
            issuer=issuer,
            patient_name=name,
            birth_date=birth,
            modalities=list(mods or []),
            conflict=conflict,
        )
        for pk, uid, pid, issuer, name, birth, mods, conflict in rows
    }


def _lock_series(reads: Statements, uids: list[str]) -> int:
    return reads.add(
        f"SELECT se.id, se.series_instance_uid, st.study_instance_uid FROM {table(Series)} se "
        f"JOIN {table(Study)} st ON st.id = se.study_id "
        "WHERE se.series_instance_uid = ANY(%s::varchar[]) "
        "ORDER BY se.series_instance_uid FOR UPDATE OF se",
        [uids],
    )


def _series(rows: list[tuple[Any, ...]]) -> dict[str, SeriesState]:
    return {uid: SeriesState(id=pk, study_uid=study) for pk, uid, study in rows}


def _lock_instances(reads: Statements, uids: list[str]) -> int:
    return reads.add(
        "SELECT i.id, i.sop_instance_uid, i.sha256, i.size_bytes, i.medium_id, i.relative_path, "
        f"se.series_instance_uid, st.study_instance_uid, se.id FROM {table(Instance)} i "
        f"JOIN {table(Series)} se ON se.id = i.series_id "
        f"JOIN {table(Study)} st ON st.id = se.study_id "
        "WHERE i.sop_instance_uid = ANY(%s::varchar[]) ORDER BY i.sop_instance_uid FOR UPDATE OF i",
        [uids],
    )


def _instances(rows: list[tuple[Any, ...]]) -> dict[str, InstanceState]:
    return {
        sop: InstanceState(
            id=pk,
            sha256=sha,
            size=size,
            medium_id=medium,
            relative_path=path,
            series_uid=series,
            study_uid=study,
            series_id=series_id,
        )
        for pk, sop, sha, size, medium, path, series, study, series_id in rows
    }


def _read_policies(reads: Statements) -> int:
    return reads.add(
        f"SELECT duplicate_policy, patient_mismatch_policy FROM {table(TenantSettings)} "
        "WHERE id = %s",
        [SINGLETON_ID],
    )


def _policies(rows: list[tuple[Any, ...]]) -> tuple[str, str]:
    """The tenant's duplicate and patient-mismatch policies (the defaults without a row)."""
    if rows:
        return str(rows[0][0]), str(rows[0][1])
    fields = TenantSettings._meta
    return (
        str(fields.get_field("duplicate_policy").default),
        str(fields.get_field("patient_mismatch_policy").default),
    )


_MEDIUM_FIELDS = [f.attname for f in StorageMedium._meta.concrete_fields]


def _read_media(reads: Statements) -> int:
    columns = ", ".join(connection.ops.quote_name(name) for name in _MEDIUM_FIELDS)
    return reads.add(f"SELECT {columns} FROM {table(StorageMedium)} ORDER BY id")


def _media(rows: list[tuple[Any, ...]]) -> list[StorageMedium]:
    return [StorageMedium.from_db(connection.alias, _MEDIUM_FIELDS, row) for row in rows]


# -- deciding ------------------------------------------------------------------------------


def _patient_differs(study: StudyState, parsed: Any) -> str:
    """What differs in the patient's name or birth date, or ''."""
    differences = []
    if study.patient_name != parsed.patient_name:
        differences.append(f"name {parsed.patient_name!r} (study: {study.patient_name!r})")
    if study.birth_date != parsed.patient_birth_date:
        theirs, ours = parsed.patient_birth_date or "none", study.birth_date or "none"
        differences.append(f"birth date {theirs} (study: {ours})")
    return " and ".join(differences)


def _decide(
    candidate: Candidate,
    *,
    studies: dict[str, StudyState],
    series: dict[str, SeriesState],
    instances: dict[str, InstanceState],
    room: Room,
    duplicate_policy: str,
    mismatch_policy: str,
) -> None:
    """Set the candidate's outcome (or refusal) and place its file; update the batch's view."""
    parsed = candidate.instance
    study = studies.get(parsed.study_instance_uid)
    if study is not None and (study.patient_id, study.issuer) != (
        parsed.patient_id,
        parsed.issuer_of_patient_id,
    ):
        raise IngestRefused(
            Refusal.IDENTITY_CONFLICT,
            f"Identity conflict: study {parsed.study_instance_uid} belongs to Patient ID "
            f"{study.patient_id!r} (issuer {study.issuer!r}); this instance names "
            f"{parsed.patient_id!r} (issuer {parsed.issuer_of_patient_id!r}). It was not "
            "merged into the other patient's study and is kept in quarantine.",
        )
    difference = _patient_differs(study, parsed) if study is not None else ""
    if difference and mismatch_policy == PatientMismatchPolicy.REFUSE:
        raise IngestRefused(
            Refusal.PATIENT_MISMATCH,
            f"The instance names the patient of study {parsed.study_instance_uid} differently: "
            f"{difference}. The tenant refuses such instances; it is kept in quarantine.",
        )
    one_series = series.get(parsed.series_instance_uid)
    if one_series is not None and one_series.study_uid != parsed.study_instance_uid:
        raise IngestRefused(
            Refusal.IDENTITY_CONFLICT,
            f"Identity conflict: series {parsed.series_instance_uid} belongs to study "
            f"{one_series.study_uid}, not to {parsed.study_instance_uid} as this instance says. "
            "It was not attached to the other study and is kept in quarantine.",
        )
    earlier = instances.get(parsed.sop_instance_uid)
    if earlier is not None:
        if (earlier.series_uid, earlier.study_uid) != (
            parsed.series_instance_uid,
            parsed.study_instance_uid,
        ):
            raise IngestRefused(
                Refusal.IDENTITY_CONFLICT,
                f"Identity conflict: SOP instance {parsed.sop_instance_uid} is stored in series "
                f"{earlier.series_uid} of study {earlier.study_uid}; this copy names series "
                f"{parsed.series_instance_uid} of study {parsed.study_instance_uid}. "
                "Kept in quarantine.",
            )
        if earlier.id is None and earlier.sha256 != candidate.sha256:
            raise IngestRefused(
                Refusal.DUPLICATE_DIFFERS,
                f"SOP Instance UID {parsed.sop_instance_uid} arrived twice in one delivery with "
                "different bytes; the first copy was stored, this one is kept in quarantine.",
            )
        if earlier.sha256 == candidate.sha256:
            candidate.outcome = ItemOutcome.DUPLICATE
            candidate.reason = (
                "An identical copy (same SOP Instance UID, same bytes) is already stored; "
                "the first copy is kept."
            )
            return
        if duplicate_policy != DuplicatePolicy.REPLACE:
            raise IngestRefused(
                Refusal.DUPLICATE_DIFFERS,
                f"Another object with SOP Instance UID {parsed.sop_instance_uid} is stored "
                f"(SHA-256 {earlier.sha256[:16]}); the tenant keeps the first copy. This copy "
                f"has other bytes (SHA-256 {candidate.sha256[:16]}) and is kept in quarantine.",
            )
    growth = candidate.size - (earlier.size if earlier is not None else 0)
    room.quota_check(growth)
    occupied = (earlier.medium_id, earlier.relative_path) if earlier is not None else None
    room.place(candidate, occupied=occupied)
    room.quota_claim(growth)

    if study is None:
        study = StudyState(
            id=None,
            patient_id=parsed.patient_id,
            issuer=parsed.issuer_of_patient_id,
            patient_name=parsed.patient_name,
            birth_date=parsed.patient_birth_date,
            modalities=[],
            conflict="",
            parsed=parsed,
        )
        studies[parsed.study_instance_uid] = study
    elif difference and not study.conflict:
        study.conflict = f"An instance named the patient differently: {difference}."[:512]
    study.touched = True
    if parsed.modality and parsed.modality not in study.modalities:
        study.modalities.append(parsed.modality)
    if one_series is None:
        one_series = SeriesState(id=None, study_uid=parsed.study_instance_uid, parsed=parsed)
        series[parsed.series_instance_uid] = one_series
        study.new_series += 1
    assert candidate.medium is not None
    if earlier is not None:
        candidate.outcome = ItemOutcome.REPLACED
        candidate.reason = (
            f"Replaced the stored copy (SHA-256 {earlier.sha256[:16]}) with this one "
            f"(SHA-256 {candidate.sha256[:16]}), as the tenant's duplicate policy says."
        )
        candidate.replaced = {
            "id": earlier.id,
            "medium_id": earlier.medium_id,
            "relative_path": earlier.relative_path,
            "size": earlier.size,
        }
        if earlier.id is not None:
            room.medium_change(earlier.medium_id, -earlier.size)
    else:
        candidate.outcome = ItemOutcome.STORED
        one_series.instances += 1
        study.instances += 1
    one_series.size += growth
    study.size += growth
    instances[parsed.sop_instance_uid] = InstanceState(
        id=earlier.id if earlier is not None else None,
        sha256=candidate.sha256,
        size=candidate.size,
        medium_id=candidate.target_medium.pk,
        relative_path=candidate.relative_path,
        series_uid=parsed.series_instance_uid,
        study_uid=parsed.study_instance_uid,
    )


# -- writing -------------------------------------------------------------------------------


def _insert_patients(studies: Iterable[StudyState]) -> dict[tuple[str, str, Any], int]:
    wanted = {
        (s.parsed.patient_id, s.parsed.patient_name, s.parsed.patient_birth_date): s.parsed
        for s in studies
    }
    if not wanted:
        return {}
    rows = [
        (pid, name, birth, parsed.patient_sex)
        for (pid, name, birth), parsed in sorted(
            wanted.items(), key=lambda kv: (kv[0][0], kv[0][1], str(kv[0][2]))
        )
    ]
    values, params = values_sql(rows, ("varchar", "varchar", "date", "varchar"))
    statements = Statements()
    statements.add(
        f"INSERT INTO {table(Patient)} (patient_id, name, birth_date, sex) VALUES {values} "
        "ON CONFLICT (patient_id, name, birth_date) DO NOTHING",
        params,
    )
    read = statements.add(
        f"SELECT id, patient_id, name, birth_date FROM {table(Patient)} "
        "WHERE patient_id = ANY(%s::varchar[])",
        [sorted({key[0] for key in wanted})],
    )
    found = statements.run()[read]
    return {(pid, name, birth): pk for pk, pid, name, birth in found}


def _insert_studies(new: dict[str, StudyState], now: datetime.datetime) -> None:
    patients = _insert_patients(new.values())
    rows = []
    # In order of arrival, so ids follow it (a tie-breaker of sorts by time received).
    for uid in new:
        state, p = new[uid], new[uid].parsed
        rows.append(
            (
                uid,
                patients[(p.patient_id, p.patient_name, p.patient_birth_date)],
                p.patient_name,
                p.patient_id,
                p.issuer_of_patient_id,
                p.patient_sex,
                p.patient_birth_date,
                p.study_date,
                p.study_time,
                p.accession_number,
                p.study_id,
                p.study_description,
                p.referring_physician_name,
                state.modalities,
                state.new_series,
                state.instances,
                state.size,
                state.conflict,
                now,
                now,
            )
        )
    values, params = values_sql(
        rows,
        (
            "varchar",
            "bigint",
            "varchar",
            "varchar",
            "varchar",
            "varchar",
            "date",
            "date",
            "time",
            "varchar",
            "varchar",
            "varchar",
            "varchar",
            "varchar[]",
            "integer",
            "integer",
            "bigint",
            "varchar",
            "timestamptz",
            "timestamptz",
        ),
    )
    inserted = execute(
        f"INSERT INTO {table(Study)} (study_instance_uid, patient_record_id, patient_name, "
        "patient_id, patient_id_issuer, patient_sex, patient_birth_date, study_date, study_time, "
        "accession_number, study_id, description, referring_physician_name, modalities, "
        "num_series, num_instances, size_bytes, attribute_conflict, received_at, updated_at) "
        f"VALUES {values} ON CONFLICT (study_instance_uid) DO NOTHING "
        "RETURNING study_instance_uid, id",
        params,
    )
    if len(inserted) != len(rows):
        raise IndexRaced("study")
    for uid, pk in inserted:
        new[uid].id = pk


def _insert_series(
    new: dict[str, SeriesState], studies: dict[str, StudyState], now: datetime.datetime
) -> list[int]:
    rows = []
    for uid in new:
        state, p = new[uid], new[uid].parsed
        rows.append(
            (
                uid,
                studies[state.study_uid].id,
                p.modality,
                p.series_number,
                p.series_description,
                p.body_part_examined,
                state.instances,
                state.size,
                "",
                "",
                now,
            )
        )
    values, params = values_sql(
        rows,
        (
            "varchar",
            "bigint",
            "varchar",
            "integer",
            "varchar",
            "varchar",
            "integer",
            "bigint",
            "varchar",
            "varchar",
            "timestamptz",
        ),
    )
    inserted = execute(
        f"INSERT INTO {table(Series)} (series_instance_uid, study_id, modality, series_number, "
        "description, body_part_examined, num_instances, size_bytes, thumbnail, thumbnail_error, "
        f"received_at) VALUES {values} ON CONFLICT (series_instance_uid) DO NOTHING "
        "RETURNING series_instance_uid, id",
        params,
    )
    if len(inserted) != len(rows):
        raise IndexRaced("series")
    for uid, pk in inserted:
        new[uid].id = pk
    return [pk for _uid, pk in inserted]


INSTANCE_COLUMNS = (
    ("sop_instance_uid", "varchar"),
    ("series_id", "bigint"),
    ("sop_class_uid", "varchar"),
    ("transfer_syntax_uid", "varchar"),
    ("instance_number", "integer"),
    ("rows", "integer"),
    ("columns", "integer"),
    ("number_of_frames", "integer"),
    ("bits_allocated", "smallint"),
    ("medium_id", "bigint"),
    ("relative_path", "varchar"),
    ("size_bytes", "bigint"),
    ("sha256", "varchar"),
)


def _instance_row(candidate: Candidate, series: dict[str, SeriesState]) -> tuple[Any, ...]:
    p = candidate.instance
    return (
        p.sop_instance_uid,
        series[p.series_instance_uid].id,
        p.sop_class_uid,
        p.transfer_syntax_uid,
        p.instance_number,
        p.rows,
        p.columns,
        p.number_of_frames,
        p.bits_allocated,
        candidate.target_medium.pk,
        candidate.relative_path,
        candidate.size,
        candidate.sha256,
    )


def _write_instances(
    writes: Statements,
    stored: list[Candidate],
    replaced: list[Candidate],
    series: dict[str, SeriesState],
    now: datetime.datetime,
) -> int | None:
    """Queue the instance rows; returns the position of the insert's result (one id per
    row inserted: fewer means another batch won a SOP Instance UID)."""
    names = ", ".join(connection.ops.quote_name(name) for name, _cast in INSTANCE_COLUMNS)
    casts = [cast for _name, cast in INSTANCE_COLUMNS]
    inserted = None
    if stored:
        rows = [(*_instance_row(c, series), now) for c in stored]
        values, params = values_sql(rows, [*casts, "timestamptz"])
        inserted = writes.add(
            f"INSERT INTO {table(Instance)} ({names}, received_at) VALUES {values} "
            "ON CONFLICT (sop_instance_uid) DO NOTHING RETURNING id",
            params,
        )
    if replaced:
        rows = [(c.replaced["id"], *_instance_row(c, series)) for c in replaced]
        values, params = values_sql(rows, ["bigint", *casts])
        assignments = ", ".join(
            f"{connection.ops.quote_name(name)} = v.{connection.ops.quote_name(name)}"
            for name, _cast in INSTANCE_COLUMNS[1:]
        )
        writes.add(
            f"UPDATE {table(Instance)} i SET {assignments} FROM (VALUES {values}) "
            f"AS v(id, {names}) WHERE i.id = v.id",
            params,
        )
    return inserted


def _update_counters(
    writes: Statements,
    studies: dict[str, StudyState],
    series: dict[str, SeriesState],
    now: datetime.datetime,
) -> None:
    series_rows = [
        (s.id, s.instances, s.size)
        for uid, s in sorted(series.items())
        if s.parsed is None and (s.instances or s.size)
    ]
    if series_rows:
        values, params = values_sql(series_rows, ("bigint", "integer", "bigint"))
        writes.add(
            f"UPDATE {table(Series)} se SET num_instances = se.num_instances + v.n, "
            f"size_bytes = se.size_bytes + v.b FROM (VALUES {values}) AS v(id, n, b) "
            "WHERE se.id = v.id",
            params,
        )
    study_rows = [
        (s.id, s.new_series, s.instances, s.size, s.modalities, s.conflict, now)
        for uid, s in sorted(studies.items())
        if s.parsed is None and s.touched
    ]
    if study_rows:
        values, params = values_sql(
            study_rows,
            ("bigint", "integer", "integer", "bigint", "varchar[]", "varchar", "timestamptz"),
        )
        writes.add(
            f"UPDATE {table(Study)} st SET num_series = st.num_series + v.ns, "
            "num_instances = st.num_instances + v.n, size_bytes = st.size_bytes + v.b, "
            "modalities = v.m, attribute_conflict = v.c, updated_at = v.t "
            f"FROM (VALUES {values}) AS v(id, ns, n, b, m, c, t) WHERE st.id = v.id",
            params,
        )


# Which job counter an outcome adds to: stored, duplicates, rejected.
_COUNTER: dict[str, int] = {
    ItemOutcome.STORED: 0,
    ItemOutcome.REPLACED: 0,
    ItemOutcome.DUPLICATE: 1,
}


def _record_outcomes(
    writes: Statements, candidates: list[Candidate], now: datetime.datetime
) -> None:
    rows = []
    counts: dict[int, list[int]] = {}
    for c in candidates:
        p = c.parsed
        rows.append(
            (
                c.item_id,
                c.outcome,
                c.refusal.code if c.refusal else "",
                c.refusal.message if c.refusal else c.reason,
                p.sop_instance_uid if p else "",
                p.study_instance_uid if p else "",
                str(c.quarantined) if c.quarantined else "",
                c.kept_bytes,
                c.sha256,
                c.size,
                now,
            )
        )
        job = counts.setdefault(c.job_id, [0, 0, 0])
        job[_COUNTER.get(c.outcome, 2)] += 1
    values, params = values_sql(
        rows,
        (
            "bigint",
            "varchar",
            "varchar",
            "text",
            "varchar",
            "varchar",
            "varchar",
            "bigint",
            "varchar",
            "bigint",
            "timestamptz",
        ),
    )
    writes.add(
        f"UPDATE {table(IngestItem)} it SET outcome = v.o, reason_code = v.rc, reason = v.r, "
        "sop_instance_uid = v.sop, study_instance_uid = v.study, quarantine_path = v.q, "
        "kept_bytes = v.kept, sha256 = v.sha, size_bytes = v.size, processed_at = v.t "
        f"FROM (VALUES {values}) AS v(id, o, rc, r, sop, study, q, kept, sha, size, t) "
        "WHERE it.id = v.id",
        params,
    )
    for job_id in sorted(counts):
        stored, duplicates, rejected = counts[job_id]
        writes.add(
            f"UPDATE {table(IngestJob)} SET stored = stored + %s, duplicates = duplicates + %s, "
            "rejected = rejected + %s, progressed_at = %s WHERE id = %s",
            [stored, duplicates, rejected, now, job_id],
        )


def _update_media(writes: Statements, room: Room) -> None:
    for medium_id in sorted(room.growth):
        if room.growth[medium_id]:
            writes.add(
                f"UPDATE {table(StorageMedium)} SET used_bytes = used_bytes + %s WHERE id = %s",
                [room.growth[medium_id], medium_id],
            )


# -- the transaction -----------------------------------------------------------------------


def index_batch(
    candidates: list[Candidate],
    *,
    quota_bytes: int,
    quarantine: Any,
) -> tuple[list[Candidate], BatchIndex]:
    """Decide, place and index `candidates`; call inside `transaction.atomic()`.

    Returns the candidates this run finished (others were finished by someone else) and
    what the commit needs to know. `quarantine(candidate, allowance)` links a refused file
    into the tenant's quarantine before the commit, as far as the day's allowance goes."""
    now = timezone.now()
    parsed_all = [c for c in candidates if c.refusal is None and c.parsed is not None]
    reads = Statements()
    pending_at = _lock_pending(reads, [c.item_id for c in candidates])
    policies_at = _read_policies(reads)
    media_at = _read_media(reads)
    held_at = held_read(reads, now=now)
    _lock_placements(reads, sorted({c.instance.sop_instance_uid for c in parsed_all}))
    studies_at = _lock_studies(reads, sorted({c.instance.study_instance_uid for c in parsed_all}))
    series_at = _lock_series(reads, sorted({c.instance.series_instance_uid for c in parsed_all}))
    instances_at = _lock_instances(reads, sorted({c.instance.sop_instance_uid for c in parsed_all}))
    read = reads.run()
    pending = {row[0] for row in read[pending_at]}
    mine = [c for c in candidates if c.item_id in pending]
    duplicate_policy, mismatch_policy = _policies(read[policies_at])
    media = _media(read[media_at])
    studies, series = _studies(read[studies_at]), _series(read[series_at])
    instances = _instances(read[instances_at])
    result = BatchIndex(media={m.pk: m for m in media})
    held = held_of(read[held_at])
    room = Room(media=media, quota_bytes=quota_bytes, quarantine_bytes=held.quarantine_bytes)
    allowance = QuarantineAllowance(held.kept_today_bytes)
    parsed = [c for c in parsed_all if c.item_id in pending]
    for candidate in parsed:
        try:
            _decide(
                candidate,
                studies=studies,
                series=series,
                instances=instances,
                room=room,
                duplicate_policy=duplicate_policy,
                mismatch_policy=mismatch_policy,
            )
        except IngestRefused as refused:
            candidate.refusal = refused
    for candidate in mine:
        if candidate.refusal is not None:
            candidate.outcome = ItemOutcome.REJECTED
            quarantine(candidate, allowance)

    new_studies = {uid: s for uid, s in studies.items() if s.id is None}
    if new_studies:
        _insert_studies(new_studies, now)
    new_series = {uid: s for uid, s in series.items() if s.id is None}
    if new_series:
        result.new_series_ids = _insert_series(new_series, studies, now)
    writes = Statements()
    stored = [c for c in mine if c.outcome == ItemOutcome.STORED]
    inserted_at = _write_instances(
        writes, stored, [c for c in mine if c.outcome == ItemOutcome.REPLACED], series, now
    )
    _update_counters(writes, studies, series, now)
    _update_media(writes, room)
    if mine:
        _record_outcomes(writes, mine, now)
    written = writes.run()
    if inserted_at is not None and len(written[inserted_at]) != len(stored):
        raise IndexRaced("instance")
    fsync_directories(room.directories)
    return mine, result
