"""STOW-RS (PS3.18 10.5): store instances sent as `multipart/related; type="application/dicom"`.

The body is read part by part (never whole) and each `application/dicom` part is staged
into one ingest job of source STOW, size-limited per part. Only once the whole body has
been read correctly is anything processed, synchronously as the DIMSE gateway does, so
the response tells each instance's real outcome; a malformed body stores nothing (400).
With a study in the URL, instances of another study are refused before they are stored.

Statuses (PS3.18 Table 10.5.3-1): 200 all stored, 202 some stored and some not, 409 none
stored, 400 malformed body, 411 no Content-Length, 413 body over the upload limit, 415
another media type, 406 a response type other than DICOM JSON. Failure reasons (PS3.18
Table I.2-2) follow `FAILURE_REASONS`; a duplicate the tenant keeps the first copy of is a
success, as in the gateway.
"""

import errno
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from django.conf import settings
from django.http import HttpRequest, HttpResponse, UnreadablePostError
from django.urls import reverse

from accounts.models import ApiToken
from accounts.permissions import Capability
from studies.dicom import DEFER_BYTES, DicomParseError, is_valid_uid, parse_file
from studies.dicomweb.access import (
    DICOM,
    DICOM_JSON,
    RETRIEVE_URL,
    DicomWebError,
    DicomWebView,
    accepts_dicom_json,
    checked_uid,
    printable,
    warning,
)
from studies.dicomweb.multipart import (
    MultipartError,
    boundary_of,
    media_type_parse,
    multipart_parts,
)
from studies.ingest import (
    STORED_OUTCOMES,
    IngestRefused,
    JobStaging,
    Refusal,
    ingest_item_reject,
    ingest_job_create,
    ingest_job_refresh,
    ingest_job_submit,
)
from studies.ingest.outcomes import store_status
from studies.models import IngestJob, IngestSource, Instance, ItemOutcome
from studies.uploads.services import max_upload_bytes

logger = logging.getLogger(__name__)

MULTIPART_RELATED = "multipart/related"
METADATA_TYPES = frozenset({"application/dicom+json", "application/dicom+xml"})

# Store Instances Response Module (PS3.18 Table I.1-1) and the SOP Instance Reference Macro.
FAILURE_REASON = "00081197"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_CLASS_UID = "00081150"
REFERENCED_SOP_INSTANCE_UID = "00081155"

OTHER_MEDIA_TYPE = Refusal.UNSUPPORTED_MEDIA_TYPE
MALFORMED_BODY = Refusal.MALFORMED_REQUEST
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def failure_reason(code: str) -> int:
    """The Failure Reason (PS3.18 Table I.2-2) of an ingest refusal: the gateway's status."""
    return int(store_status(outcome=ItemOutcome.REJECTED, reason_code=code))


def request_boundary(content_type: str) -> str:
    """The boundary of a STOW-RS body, or the 415/400 its Content-Type deserves."""
    media, parameters = media_type_parse(content_type)
    part_type = media_type_parse(parameters.get("type", DICOM))[0]
    if media != MULTIPART_RELATED:
        raise DicomWebError(
            415,
            f'Send multipart/related; type="{DICOM}" (got {media or "no Content-Type"!r}).',
        )
    if part_type in METADATA_TYPES:
        raise DicomWebError(
            415, f"Metadata and bulk data ({part_type}) are not supported; send {DICOM} parts."
        )
    if part_type != DICOM:
        raise DicomWebError(415, f"Parts of type {part_type!r} are not supported; send {DICOM}.")
    try:
        return boundary_of(content_type)
    except MultipartError as error:
        raise DicomWebError(400, str(error)) from None


# -- receiving ---------------------------------------------------------------------------------


@dataclass
class Received:
    """What one request's body turned into: its job (opened at the first part) and how its
    parts fared on the way in."""

    created_by: Any
    description: str
    token: ApiToken | None = None
    job: IngestJob | None = None
    parts: int = 0
    other_media_types: int = 0
    # SOP Class and Instance UIDs of items refused here, for the response.
    refused_uids: dict[int, tuple[str, str]] = field(default_factory=dict)

    def open_job(self) -> IngestJob:
        # Opened lazily: a body that is not multipart at all leaves no empty job in /jobs/.
        if self.job is None:
            self.job = ingest_job_create(
                source=IngestSource.STOW,
                created_by=self.created_by,
                description=self.description,
                token=self.token,
            )
        return self.job


class _BodyGuard(Iterator[bytes]):
    """A part's chunks for `JobStaging.stage`; a broken body becomes that item's refusal.

    `JobStaging.stage` cleans up after an `IngestRefused` (partial file removed, item
    counted as rejected), so the error the request ends with is kept here and raised later.
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self.error: Exception | None = None

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except (MultipartError, UnreadablePostError) as error:
            self.error = error
            raise IngestRefused(MALFORMED_BODY, f"The request body is malformed: {error}") from None


def stow_receive(*, request: HttpRequest, boundary: str, received: Received) -> IngestJob:
    """Stage every part of the body into the request's job; raises what broke the body."""
    staging: JobStaging | None = None
    try:
        for index, part in enumerate(multipart_parts(stream=request, boundary=boundary), start=1):
            received.parts = index
            staging = staging or JobStaging(received.open_job())
            name = f"stow-part-{index}.dcm"
            # RFC 2387 lets the `type` parameter stand for parts that name no type of their own.
            if part.content_type not in ("", DICOM):
                staging.refuse(
                    name=name,
                    code=OTHER_MEDIA_TYPE,
                    reason=f"Part {index} is {printable(part.content_type)}, not {DICOM}; "
                    "it was not read.",
                )
                received.other_media_types += 1
                continue
            guard = _BodyGuard(part.body)
            staging.stage(name=name, stream=guard)
            if guard.error is not None:
                raise guard.error
    finally:
        if staging is not None:
            staging.flush()  # every part read so far is counted, whatever broke the body
    # The parser refuses a body without parts, so the job exists here.
    return received.open_job()


def stow_refuse_other_studies(
    *, job: IngestJob, received: Received, study_instance_uid: str
) -> int:
    """Quarantine the staged instances of another study than the URL names (PS3.18 10.5.2)."""
    refused = 0
    pending = job.items.filter(outcome=ItemOutcome.PENDING).order_by("pk")
    for item in pending:
        try:
            parsed = parse_file(item.staged_path, max_bytes=settings.PORTAL_MAX_INSTANCE_BYTES)
        except DicomParseError:
            continue  # processing rejects it with the parser's own reason
        if parsed.study_instance_uid == study_instance_uid:
            continue
        ingest_item_reject(
            item=item,
            code=Refusal.STUDY_MISMATCH,
            reason=f"The instance belongs to study {parsed.study_instance_uid}, not to "
            f"{study_instance_uid} named in the URL; it was not stored.",
        )
        received.refused_uids[item.pk] = (parsed.sop_class_uid, parsed.sop_instance_uid)
        refused += 1
    return refused


def stow_job_abandon(*, job: IngestJob, reason: str) -> None:
    """A request that broke off: nothing of it is processed; staged files go, the job closes."""
    for item in job.items.filter(outcome=ItemOutcome.PENDING):
        # The parts were whole but the request was not: the client sends them again, so the
        # staged files go rather than to quarantine. (An item whose staging broke off has
        # no file; the job's staging folder goes when the job closes.)
        if item.staged_path:
            Path(item.staged_path).unlink(missing_ok=True)
        ingest_item_reject(item=item, code=MALFORMED_BODY, reason=reason)
    ingest_job_refresh(job_id=job.pk)


# -- answering ---------------------------------------------------------------------------------


def _element(vr: str, *values: Any) -> dict[str, Any]:
    """A DICOM JSON element (PS3.18 F.2); no values is an empty (Type 2) element."""
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def _uids_of_refused_file(path: str) -> tuple[str, str]:
    """SOP Class and Instance UIDs of a quarantined file, when it has valid ones."""
    if not path:
        return "", ""
    try:
        dataset = pydicom.dcmread(
            path,
            stop_before_pixels=True,
            defer_size=DEFER_BYTES,  # large values stay on disk, as in the parser
            specific_tags=["SOPClassUID", "SOPInstanceUID"],
        )
        found = (str(dataset.get("SOPClassUID", "")), str(dataset.get("SOPInstanceUID", "")))
    except Exception:  # a file refused as unreadable may well stay unreadable
        return "", ""
    return tuple(uid if is_valid_uid(uid) else "" for uid in found)  # type: ignore[return-value]


@dataclass
class StoreOutcome:
    """The response body and its summary: counts, the status and a warning for people."""

    body: dict[str, Any]
    status: int
    stored: int
    duplicates: int
    failed: int
    warning: str


def stow_outcome(
    *, request: HttpRequest, job: IngestJob, received: Received, study_instance_uid: str | None
) -> StoreOutcome:
    """The Store Instances Response Module (PS3.18 Annex I) of a processed job."""
    items = list(job.items.order_by("pk"))
    stored_uids = [i.sop_instance_uid for i in items if i.outcome in STORED_OUTCOMES]
    # Where each instance is now: a kept duplicate lives where its first copy was indexed.
    where = {
        row["sop_instance_uid"]: row
        for row in Instance.objects.filter(sop_instance_uid__in=stored_uids).values(
            "sop_instance_uid",
            "sop_class_uid",
            "series__series_instance_uid",
            "series__study__study_instance_uid",
        )
    }
    referenced, failed, studies, problems = [], [], set(), []
    duplicates = 0
    for item in items:
        row = where.get(item.sop_instance_uid) if item.outcome in STORED_OUTCOMES else None
        if row is not None:
            study = row["series__study__study_instance_uid"]
            studies.add(study)
            path = reverse(
                "dicomweb_instance",
                kwargs={
                    "study": study,
                    "series": row["series__series_instance_uid"],
                    "instance": item.sop_instance_uid,
                },
            )
            referenced.append(
                {
                    REFERENCED_SOP_CLASS_UID: _element("UI", row["sop_class_uid"]),
                    REFERENCED_SOP_INSTANCE_UID: _element("UI", item.sop_instance_uid),
                    RETRIEVE_URL: _element("UR", request.build_absolute_uri(path)),
                }
            )
            duplicates += item.outcome == ItemOutcome.DUPLICATE
            continue
        if item.outcome in STORED_OUTCOMES:  # deleted meanwhile: it is not there to fetch
            item.reason_code, item.reason = "processing", "The instance is no longer stored."
        problems.append(f"{item.name}: {item.reason}")
        if item.reason_code == OTHER_MEDIA_TYPE:
            continue  # not an instance at all, so nothing to reference; the warning counts it
        sop_class, sop_instance = received.refused_uids.get(item.pk) or _uids_of_refused_file(
            item.quarantine_path
        )
        entry: dict[str, Any] = {}
        if sop_class:
            entry[REFERENCED_SOP_CLASS_UID] = _element("UI", sop_class)
        if sop_instance:
            entry[REFERENCED_SOP_INSTANCE_UID] = _element("UI", sop_instance)
        entry[FAILURE_REASON] = _element("US", failure_reason(item.reason_code))
        failed.append(entry)

    if study_instance_uid is not None and referenced:
        studies = {study_instance_uid}
    study_url = (
        request.build_absolute_uri(reverse("dicomweb_study", kwargs={"study": next(iter(studies))}))
        if len(studies) == 1
        else None
    )
    body: dict[str, Any] = {
        RETRIEVE_URL: _element("UR", study_url) if study_url else _element("UR")
    }
    if failed:
        body[FAILED_SOP_SEQUENCE] = _element("SQ", *failed)
    if referenced:
        body[REFERENCED_SOP_SEQUENCE] = _element("SQ", *referenced)

    not_stored = len(problems)
    status = 200 if not not_stored else 202 if referenced else 409
    summary = []
    if not_stored:
        summary.append(
            f"{not_stored} of {len(items)} parts were not stored ({'; '.join(problems)})"
        )
    if duplicates:
        summary.append(
            f"{duplicates} instance(s) were already stored; the archive kept the first copy"
        )
    return StoreOutcome(
        body=body,
        status=status,
        stored=len(referenced),
        duplicates=duplicates,
        failed=not_stored,
        warning=". ".join(summary),
    )


# -- the view ----------------------------------------------------------------------------------


class StoreView(DicomWebView):
    """`POST /dicom-web/studies[/{StudyInstanceUID}]`: store the instances of the body."""

    dicomweb_capability = Capability.INGEST_STORE
    audit_action = "dicomweb.store"

    def post(self, request: HttpRequest, study: str | None = None) -> HttpResponse:
        self.received: Received | None = None
        try:
            return self._store(request, study)
        except DicomWebError as error:
            job = self.received.job if self.received else None
            self.audit(
                object_type="ingestjob" if job else "",
                object_id=str(job.pk) if job else "",
                outcome="failure",
                details={"status": error.status, "reason": error.reason},
            )
            raise

    def _store(self, request: HttpRequest, study: str | None) -> HttpResponse:
        target = checked_uid(study, "Study Instance UID") if study is not None else None
        if not accepts_dicom_json(request):
            raise DicomWebError(406, f"The store response is available as {DICOM_JSON} only.")
        boundary = request_boundary(request.META.get("CONTENT_TYPE", ""))
        try:
            length: int | None = int(request.META["CONTENT_LENGTH"])
        except (KeyError, ValueError, TypeError):
            length = None
        if length is None:
            # Django reads nothing of a body without a length (chunked uploads).
            raise DicomWebError(411, "Send the body with a Content-Length.")
        limit = max_upload_bytes()
        if length > limit:
            raise DicomWebError(413, f"The body of {length} bytes is over the limit of {limit}.")

        self.received = received = Received(
            created_by=self.user,
            token=self.token,
            description="STOW-RS" + (f" to study {target}" if target else ""),
        )
        job = self._receive(request, boundary, received)
        if target is not None:
            stow_refuse_other_studies(job=job, received=received, study_instance_uid=target)
        job = ingest_job_submit(job=job, run_now=True)
        outcome = stow_outcome(
            request=request, job=job, received=received, study_instance_uid=target
        )

        self.audit(
            object_type="ingestjob",
            object_id=str(job.pk),
            outcome="success" if outcome.stored else "failure",
            details={
                "status": outcome.status,
                "study": target,
                "parts": received.parts,
                "stored": outcome.stored,
                "duplicates": outcome.duplicates,
                "failed": outcome.failed,
                "other_media_types": received.other_media_types,
            },
        )
        response = HttpResponse(
            json.dumps(outcome.body), status=outcome.status, content_type=DICOM_JSON
        )
        if outcome.warning:
            response["Warning"] = warning(outcome.warning)
        return response

    def _receive(self, request: HttpRequest, boundary: str, received: Received) -> IngestJob:
        """The job with every part staged, or the request's error once that job is closed."""
        try:
            return stow_receive(request=request, boundary=boundary, received=received)
        except MultipartError as error:
            reason = f"The multipart body is malformed: {error} Nothing was stored."
            self._abandon(received, reason)
            raise DicomWebError(400, reason) from None
        except UnreadablePostError:
            reason = "The request body broke off before its end. Nothing was stored."
            self._abandon(received, reason)
            raise DicomWebError(400, reason) from None
        except OSError as error:
            self._abandon(received, "The archive could not stage the upload.")
            if error.errno in NO_SPACE_ERRNOS:
                raise DicomWebError(
                    507, "The archive has no room to receive the upload. Nothing was stored."
                ) from None
            raise
        except BaseException:
            self._abandon(received, "The archive failed while receiving the upload.")
            raise

    def _abandon(self, received: Received, reason: str) -> None:
        if received.job is None:
            return
        try:
            stow_job_abandon(job=received.job, reason=reason)
        except Exception:  # keep the original error; the job stays visible as unfinished
            logger.exception("could not close STOW-RS job %s", received.job.pk)
