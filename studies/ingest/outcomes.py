"""The ingest vocabulary: refusal codes, the outcomes a sender may count as stored, and the
exception that carries a refusal. One owner: every channel (upload, REST, STOW-RS, DIMSE)
maps these, never string literals of its own."""

from enum import IntEnum, StrEnum

from studies.models import ItemOutcome


class Refusal(StrEnum):
    """Why an item was not stored; stable (kept on the item, shown to senders)."""

    # Received bytes
    TOO_LARGE = "too-large"
    STAGING_FAILED = "staging-failed"
    STAGING_LOST = "staging-lost"
    # What the parser finds (studies/dicom.py raises these codes)
    NOT_DICOM = "not-dicom"
    UNREADABLE = "unreadable"
    TRUNCATED = "truncated"
    TOO_DEEP = "too-deep"
    # The bytes break PS3.5 (studies/scan.py): pydicom would guess, a viewer would fail.
    DUPLICATE_TAG = "duplicate-tag"
    TAG_ORDER = "tag-order"
    MALFORMED = "malformed"  # items and delimiters that contradict their sequence
    WRONG_ENCODING = "wrong-encoding"  # not in the VR encoding its transfer syntax says
    MISSING_UID = "missing-uid"
    INVALID_UID = "invalid-uid"
    NOT_STORABLE = "not-storable"
    NO_TRANSFER_SYNTAX = "no-transfer-syntax"
    PIXEL_DATA = "pixel-data"  # pixel data a viewer would choke on (length, attributes)
    INFLATES_TOO_LARGE = "inflates-too-large"  # a deflated data set past the instance limit
    COMMAND_MISMATCH = "command-mismatch"  # C-STORE's Affected SOP UIDs are not the data set's
    # What the index refuses
    IDENTITY_CONFLICT = "identity-conflict"
    PATIENT_MISMATCH = "patient-mismatch"
    DUPLICATE_DIFFERS = "duplicate-differs"
    # Room
    QUOTA = "quota"
    NO_MEDIUM = "no-medium"
    # Channels
    STUDY_MISMATCH = "study-mismatch"
    MALFORMED_REQUEST = "malformed-request"
    UNSUPPORTED_MEDIA_TYPE = "unsupported-media-type"
    BAD_ZIP = "bad-zip"
    ZIP_SLIP = "zip-slip"
    UPLOAD_REFUSED = "upload-refused"
    WORKER_LOST = "worker-lost"


# Outcomes a sender may treat as "the archive has it" (a kept identical duplicate included).
STORED_OUTCOMES = frozenset({ItemOutcome.STORED, ItemOutcome.REPLACED, ItemOutcome.DUPLICATE})
# Refusals that say nothing about the file: the sender may retry once room is made.
OUT_OF_RESOURCES_CODES = frozenset({Refusal.QUOTA, Refusal.NO_MEDIUM, Refusal.TOO_LARGE})


class IngestRefused(Exception):
    """A file that cannot be taken in, with a stable code and a sentence for people."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = str(code), message


class StoreStatus(IntEnum):
    """C-STORE statuses (PS3.4 B.2.3), which STOW-RS sends as Failure Reasons (PS3.18
    Table I.2-2): one table, so both channels tell a sender the same thing."""

    SUCCESS = 0x0000
    PROCESSING_FAILURE = 0x0110
    # PS3.7 C.5: another object is stored under this SOP Instance UID (the first copy kept).
    DUPLICATE_SOP_INSTANCE = 0x0111
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    OUT_OF_RESOURCES = 0xA700
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    # In the "Cxxx cannot understand" range; dcm4chee sends 0xC409 for a study mismatch.
    STUDY_MISMATCH = 0xC409
    IDENTITY_CONFLICT = 0xC40A


_STATUS_OF_REFUSAL = {
    **dict.fromkeys(OUT_OF_RESOURCES_CODES, StoreStatus.OUT_OF_RESOURCES),
    Refusal.NOT_STORABLE: StoreStatus.SOP_CLASS_NOT_SUPPORTED,
    # A Type 1 attribute of every composite IOD is absent: the data set breaks its SOP class.
    Refusal.MISSING_UID: StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    Refusal.COMMAND_MISMATCH: StoreStatus.DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    Refusal.STUDY_MISMATCH: StoreStatus.STUDY_MISMATCH,
    Refusal.IDENTITY_CONFLICT: StoreStatus.IDENTITY_CONFLICT,
    Refusal.PATIENT_MISMATCH: StoreStatus.IDENTITY_CONFLICT,
    Refusal.DUPLICATE_DIFFERS: StoreStatus.DUPLICATE_SOP_INSTANCE,
    Refusal.STAGING_FAILED: StoreStatus.OUT_OF_RESOURCES,
    # Too large for this archive whatever room is made (not in OUT_OF_RESOURCES_CODES).
    Refusal.INFLATES_TOO_LARGE: StoreStatus.OUT_OF_RESOURCES,
    **dict.fromkeys(
        (
            Refusal.NOT_DICOM,
            Refusal.UNREADABLE,
            Refusal.TRUNCATED,
            Refusal.TOO_DEEP,
            Refusal.DUPLICATE_TAG,
            Refusal.TAG_ORDER,
            Refusal.MALFORMED,
            Refusal.WRONG_ENCODING,
            Refusal.INVALID_UID,
            Refusal.NO_TRANSFER_SYNTAX,
            Refusal.PIXEL_DATA,
        ),
        StoreStatus.CANNOT_UNDERSTAND,
    ),
    Refusal.WORKER_LOST: StoreStatus.PROCESSING_FAILURE,
}


def store_status(*, outcome: str, reason_code: str = "") -> StoreStatus:
    """The status a sender gets for an item's outcome; an identical re-sent copy is a success,
    a refusal without a status of its own is a processing failure."""
    if outcome in STORED_OUTCOMES:
        return StoreStatus.SUCCESS
    return _STATUS_OF_REFUSAL.get(reason_code, StoreStatus.PROCESSING_FAILURE)  # type: ignore[call-overload]
