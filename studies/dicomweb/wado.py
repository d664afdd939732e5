"""WADO-RS (PS3.18 10.4) and WADO-URI (PS3.18 9): objects, metadata, frames, bulk data, images.

Every object is found by its UIDs in the active tenant's index (a UID of another tenant is
simply not there: 404) and read from the file the index names; no path is ever built from
the request. Choices this server makes where PS3.18 leaves room:

- Objects are sent as stored, never transcoded. `multipart/related; type="application/dicom"`
  is answered with or without `transfer-syntax` when it is `*` or the stored syntax of every
  object; any other syntax is a 406 that names the stored ones. `application/dicom` alone is
  answered with the file itself for an instance, and is a 406 for a study or series (several
  objects need a multipart body). `application/zip` gives a stored zip of the files.
- Bodies of objects and bulk data are streamed from disk, 1 MiB at a time. The view resolves
  the index rows to (file, offset, length) first and the stream touches only files: it runs
  after the view returned, when the connection may already be back in `public`.
- Metadata: top-level binary values longer than 768 bytes (1 KiB of base64) become a
  `BulkDataURI` of the bulk data resource, decided from the header so that pixel data is never
  read; binary values inside sequences stay inline, as the bulk route addresses top-level tags.
  (0002,0010) and (0008,3002) carry the stored transfer syntax.
- Frames: `type="application/octet-stream"` without a syntax (or with Explicit VR Little
  Endian) gives raw little-endian pixels, decoded by pydicom when the file is compressed; the
  stored syntax, or `transfer-syntax=*`, gives each frame's stored bytes as they are.
  Undecodable pixels are a 406 unless the client also accepts the stored syntax.
- Rendered and thumbnail: PNG unless the client prefers JPEG, windowed as series thumbnails
  are. Rendered shows an instance's first frame, a thumbnail its middle one; a series shows its
  middle instance and a study its first series'. Pixels that cannot be decoded are a 406
  ("cannot render ..."): the resource exists, only not in a media type we can produce.
- HEAD is answered with GET's headers and no body; objects and bulk data are not read for
  it, frames and images are made as for GET (their length is known only then).
"""

import io
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from django.conf import settings
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.urls import reverse
from PIL import Image
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels import pixel_array
from pydicom.pixels.utils import get_expected_length
from pydicom.tag import BaseTag, Tag

from studies.dicom import DicomParseError, check_decodable
from studies.dicomweb.access import (
    DICOM_JSON,
    DicomWebError,
    DicomWebView,
    accepts_dicom_json,
    checked_uid,
)
from studies.dicomweb.multipart import media_type_parse
from studies.dicomweb.negotiation import MediaRange, accepted
from studies.index.selectors import series_middle_instance, study_series
from studies.index.services import THUMBNAIL_SIZE, zip_stream
from studies.index.thumbnails import frame_image
from studies.media.objectstore import store_for
from studies.models import Instance, MediumKind, Series, Study
from studies.storage import CHUNK, StoragePathError, instance_chunks, instance_path

logger = logging.getLogger(__name__)

EXPLICIT_LE = "1.2.840.10008.1.2.1"
UNCOMPRESSED = {"1.2.840.10008.1.2", EXPLICIT_LE}
DEFLATED = "1.2.840.10008.1.2.1.99"
BIG_ENDIAN = "1.2.840.10008.1.2.2"
NATIVE = UNCOMPRESSED | {DEFLATED, BIG_ENDIAN}
DICOM = "application/dicom"
OCTETS = "application/octet-stream"
PNG, JPEG = "image/png", "image/jpeg"
BULK_BYTES = 768
BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
WORD_BYTES = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
PIXEL_TAGS = (Tag(0x7FE00010), Tag(0x7FE00008), Tag(0x7FE00009))
MAX_VIEWPORT = 8192
# PS3.18 table 8.7.3-5: the media type of a compressed frame, by its transfer syntax.
FRAME_MEDIA_TYPES = {
    **dict.fromkeys(["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"], JPEG),
    **dict.fromkeys(["1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"], JPEG),
    **dict.fromkeys(["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"], "image/jls"),
    **dict.fromkeys(["1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"], "image/jp2"),
    **dict.fromkeys(["1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93"], "image/jpx"),
    **dict.fromkeys(
        ["1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"],
        "image/jphc",
    ),
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
# The syntax a compressed media type means when the client names none (same table).
DEFAULT_SYNTAX = {
    JPEG: "1.2.840.10008.1.2.4.50",
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/jpx": "1.2.840.10008.1.2.4.92",
    "image/jphc": "1.2.840.10008.1.2.4.201",
    "image/dicom-rle": "1.2.840.10008.1.2.5",
    "image/x-dicom-rle": "1.2.840.10008.1.2.5",
}
WINDOW_FUNCTIONS = {"linear": "LINEAR", "linear-exact": "LINEAR_EXACT", "sigmoid": "SIGMOID"}
_FRAME_NUMBER = re.compile(r"[0-9]{1,9}")
MAX_DECODED_BYTES = 256 << 20
_TAG = re.compile(r"[0-9A-Fa-f]{8}")


# -- Accept -----------------------------------------------------------------------------------


def _not_acceptable(what: str, ranges: list[MediaRange], reasons: list[str]) -> DicomWebError:
    asked = ", ".join(_describe(r) for r in ranges)
    why = " ".join(dict.fromkeys(reasons)) or "None of them is offered here."
    return DicomWebError(406, f"Cannot answer {what} as {asked}. {why}")


def _describe(media_range: MediaRange) -> str:
    extra = "".join(f"; {name}={value}" for name, value in media_range.params.items())
    return media_range.media_type + extra


# -- finding what was asked for ---------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The study, series or instance a URL names, found in the active tenant's index."""

    study: Study
    series: Series | None = None
    instance: Instance | None = None

    @property
    def level(self) -> str:
        return "instance" if self.instance else "series" if self.series else "study"

    @property
    def uid(self) -> str:
        if self.instance is not None:
            return self.instance.sop_instance_uid
        if self.series is not None:
            return self.series.series_instance_uid
        return self.study.study_instance_uid

    def instances(self) -> QuerySet[Instance]:
        """Its instances in viewing order: series by number, then instance number."""
        found = Instance.objects.select_related("medium", "series")
        if self.instance is not None:
            found = found.filter(pk=self.instance.pk)
        elif self.series is not None:
            found = found.filter(series=self.series)
        else:
            found = found.filter(series__study=self.study)
        return found.order_by(
            "series__series_number",
            "series__series_instance_uid",
            "instance_number",
            "sop_instance_uid",
        )


def find_target(study: str, series: str | None = None, instance: str | None = None) -> Target:
    """The named objects, each inside the one before it, or a 400/404 saying which is not."""
    study_uid = checked_uid(study, "study instance UID")
    series_uid = checked_uid(series, "series instance UID") if series is not None else None
    sop_uid = checked_uid(instance, "SOP instance UID") if instance is not None else None
    found_study = Study.objects.filter(study_instance_uid=study_uid).first()
    if found_study is None:
        raise DicomWebError(404, f"There is no study {study_uid} here.")
    if series_uid is None:
        return Target(found_study)
    found_series = Series.objects.filter(study=found_study, series_instance_uid=series_uid).first()
    if found_series is None:
        raise DicomWebError(404, f"Study {study_uid} has no series {series_uid}.")
    if sop_uid is None:
        return Target(found_study, found_series)
    found_instance = (
        Instance.objects.select_related("medium", "series")
        .filter(series=found_series, sop_instance_uid=sop_uid)
        .first()
    )
    if found_instance is None:
        raise DicomWebError(404, f"Series {series_uid} has no instance {sop_uid}.")
    return Target(found_study, found_series, found_instance)


def stored_whole(instance: Instance, *, check: bool = True) -> "StoredBody":
    """The instance's whole file as a body read from its medium only when sent; `check`
    first asks the medium whether it is there (a 503 now, not a cut-off body later).
    Object storage is not asked for every instance of a study: its index size is used."""
    if instance.medium.kind != MediumKind.S3:
        _path, size = stored_file(instance)
        return StoredBody(instance, size)
    if check:
        try:
            stat = store_for(instance.medium).stat(instance.relative_path)
        except OSError as error:
            raise _unavailable(instance, error) from error
        if stat is None:
            raise _unavailable(instance, FileNotFoundError(instance.relative_path))
    return StoredBody(instance, instance.size_bytes)


def _unavailable(instance: Instance, error: BaseException) -> DicomWebError:
    logger.error("dicomweb: file of %s unavailable: %s", instance.sop_instance_uid, error)
    return DicomWebError(
        503,
        f"The file of instance {instance.sop_instance_uid} is not available now "
        "(its storage medium may be offline).",
    )


def stored_file(instance: Instance) -> tuple[Path, int]:
    """The instance's file and its size now, or a 503 when the medium does not give it."""
    try:
        path = instance_path(instance)
        return path, path.stat().st_size
    except (OSError, StoragePathError) as error:
        raise _unavailable(instance, error) from error


# -- multipart bodies -------------------------------------------------------------------------


@dataclass(frozen=True)
class FileSlice:
    """Bytes of a file, read only when the body is sent."""

    path: Path
    offset: int
    length: int


@dataclass(frozen=True)
class StoredBody:
    """An instance's whole stored file, from whichever medium holds it, read when sent."""

    instance: Instance
    length: int

    def chunks(self) -> Iterator[bytes]:
        sent = 0
        for chunk in instance_chunks(self.instance, 0, self.length):
            sent += len(chunk)
            yield chunk
        if sent != self.length:
            # Content-Length promised these bytes; breaking the connection says so.
            logger.error("dicomweb: %s ended early", self.instance.relative_path)
            raise OSError(f"{self.instance.relative_path} is shorter than it was")


@dataclass(frozen=True)
class Part:
    content_type: str
    body: bytes | FileSlice | StoredBody
    location: str = ""

    @property
    def length(self) -> int:
        if isinstance(self.body, bytes):
            return len(self.body)
        return self.body.length


def file_chunks(piece: FileSlice) -> Iterator[bytes]:
    remaining = piece.length
    with piece.path.open("rb") as source:
        source.seek(piece.offset)
        while remaining > 0:
            chunk = source.read(min(CHUNK, remaining))
            if not chunk:
                # Content-Length promised these bytes; breaking the connection says so.
                logger.error("dicomweb: %s ended %d bytes early", piece.path, remaining)
                raise OSError(f"{piece.path} is shorter than it was")
            remaining -= len(chunk)
            yield chunk


class MultipartBody:
    """A `multipart/related` body (RFC 2387) of known length, produced part by part."""

    def __init__(self, parts: list[Part], part_type: str):
        self.parts = parts
        self.boundary = uuid.uuid4().hex
        self.content_type = f'multipart/related; type="{part_type}"; boundary={self.boundary}'
        self.heads = [self._head(part, first=index == 0) for index, part in enumerate(parts)]
        self.tail = f"\r\n--{self.boundary}--\r\n".encode("ascii")

    def _head(self, part: Part, *, first: bool) -> bytes:
        lines = [f"--{self.boundary}", f"Content-Type: {part.content_type}"]
        lines.append(f"Content-Length: {part.length}")
        if part.location:
            lines.append(f"Content-Location: {part.location}")
        return (b"" if first else b"\r\n") + "\r\n".join(lines).encode("ascii") + b"\r\n\r\n"

    @property
    def length(self) -> int:
        heads = sum(len(head) for head in self.heads)
        return heads + sum(part.length for part in self.parts) + len(self.tail)

    def chunks(self) -> Iterator[bytes]:
        for head, part in zip(self.heads, self.parts, strict=True):
            yield head
            yield from body_chunks(part.body)
        yield self.tail


def body_chunks(body: bytes | FileSlice | StoredBody) -> Iterator[bytes]:
    if isinstance(body, FileSlice):
        yield from file_chunks(body)
    elif isinstance(body, StoredBody):
        yield from body.chunks()
    else:
        yield body


def streamed(
    request: HttpRequest,
    chunks: Callable[[], Iterator[bytes]],
    *,
    content_type: str,
    length: int | None,
    **headers: str,
) -> HttpResponseBase:
    """A streaming answer, or for HEAD the same headers without touching a file."""
    response: HttpResponseBase
    if request.method == "HEAD":
        response = HttpResponse(content_type=content_type)
    else:
        response = StreamingHttpResponse(chunks(), content_type=content_type)
    if length is not None:
        response["Content-Length"] = str(length)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def multipart_response(request: HttpRequest, body: MultipartBody) -> HttpResponseBase:
    return streamed(request, body.chunks, content_type=body.content_type, length=body.length)


# -- reading files ----------------------------------------------------------------------------


def read_header(path: Path, transfer_syntax: str) -> Dataset:
    """The dataset with values over `BULK_BYTES` left unread (deferred) where pydicom can.

    Deflated files are inflated in memory, where a deferred read cannot seek, so they are
    read whole.
    """
    defer = None if transfer_syntax == DEFLATED else BULK_BYTES
    return pydicom.dcmread(str(path), defer_size=defer)


def element_vr(element: DataElement | RawDataElement) -> str:
    if element.VR:
        return str(element.VR)
    try:
        vr = dictionary_VR(element.tag)
    except KeyError:
        return "UN"
    # Implicit VR files carry no VR; PS3.5 A.1 makes ambiguous pixel-like values OW there.
    return "OW" if " or " in vr and "OW" in vr else vr


def element_length(element: DataElement | RawDataElement) -> int:
    if isinstance(element, RawDataElement):
        return element.length if element.value is None else len(element.value)
    return len(element.value) if isinstance(element.value, bytes) else 0


def is_bulk(element: DataElement | RawDataElement) -> bool:
    """Whether the value goes to a BulkDataURI: binary and too long to inline."""
    return element_vr(element) in BINARY_VRS and element_length(element) > BULK_BYTES


def instance_metadata(
    path: Path, *, transfer_syntax: str, bulk_uri: Callable[[BaseTag], str]
) -> dict[str, Any]:
    """The instance as a DICOM JSON object (PS3.18 F.2) with its bulk values as URIs."""
    ds = read_header(path, transfer_syntax)
    bulk: dict[BaseTag, str] = {}
    for tag in list(ds.keys()):
        element = ds.get_item(tag, keep_deferred=True)
        if element is not None and is_bulk(element):
            bulk[tag] = element_vr(element)
            del ds[tag]
    # What is left is short at the top level; without a handler nested binaries are inline.
    metadata = ds.to_json_dict(suppress_invalid_tags=True)
    for tag, vr in bulk.items():
        metadata[f"{tag:08X}"] = {"vr": vr, "BulkDataURI": bulk_uri(tag)}
    metadata["00020010"] = {"vr": "UI", "Value": [transfer_syntax]}
    metadata["00083002"] = {"vr": "UI", "Value": [transfer_syntax]}
    return dict(sorted(metadata.items()))


def little_endian(value: bytes, vr: str) -> bytes:
    """A big endian file's word values in the little endian order PS3.18 sends."""
    size = WORD_BYTES.get(vr, 1)
    if size == 1 or len(value) % size:
        return value
    return np.frombuffer(value, dtype=f">u{size}").astype(f"<u{size}").tobytes()


def bulk_body(path: Path, transfer_syntax: str, tag: BaseTag) -> bytes | FileSlice:
    """The element's value as stored, read from its place in the file when that is known."""
    ds = read_header(path, transfer_syntax)
    element = ds.get_item(tag, keep_deferred=True)
    missing = DicomWebError(
        404, f"The instance has no bulk data at ({tag.group:04X},{tag.elem:04X})."
    )
    if element is None or element_vr(element) not in BINARY_VRS:
        raise missing
    if (
        isinstance(element, RawDataElement)
        and element.value is None
        and element.length != 0xFFFFFFFF
        and element.is_little_endian
    ):
        return FileSlice(path, element.value_tell, element.length)
    value = ds[tag].value
    if not isinstance(value, bytes):
        raise missing
    return little_endian(value, element_vr(element)) if transfer_syntax == BIG_ENDIAN else value


# -- frames -----------------------------------------------------------------------------------


def frame_numbers(text: str, count: int) -> list[int]:
    """`1,3,5` -> [1, 3, 5]; 400 for anything malformed, 404 past the last frame."""
    pieces = [piece.strip() for piece in text.split(",")]
    if not all(_FRAME_NUMBER.fullmatch(piece) for piece in pieces):
        raise DicomWebError(
            400, f"Frames are a comma-separated list of numbers; {text[:80]!r} is not."
        )
    numbers = [int(piece) for piece in pieces]
    if 0 in numbers:
        raise DicomWebError(400, "Frames are numbered from 1; there is no frame 0.")
    if len(numbers) > max(count, 1):
        raise DicomWebError(400, f"{len(numbers)} frame numbers for {count} frames.")
    beyond = [number for number in numbers if number > count]
    if beyond:
        raise DicomWebError(
            404, f"The instance has {count} frame(s); there is no frame {beyond[0]}."
        )
    return numbers


@dataclass(frozen=True)
class FrameSource:
    """Where an instance's pixel data is and how it is encoded, from its header."""

    path: Path
    transfer_syntax: str
    header: Dataset
    element: DataElement | RawDataElement
    count: int

    @property
    def compressed(self) -> bool:
        return self.transfer_syntax not in NATIVE

    def raw_frame(self, number: int) -> bytes | FileSlice:
        """Frame `number` (1-based) as little endian native pixels."""
        bits = int(self.header.get("BitsAllocated", 8) or 8)
        in_place = self.transfer_syntax in UNCOMPRESSED and bits >= 8
        if in_place and isinstance(self.element, RawDataElement) and self.element.value is None:
            size = get_expected_length(self.header, "bytes") // self.count
            return FileSlice(self.path, self.element.value_tell + (number - 1) * size, size)
        try:  # decoding to native: only what the header says fits the decoding limit
            check_decodable(self.header, limit=int(settings.PORTAL_MAX_DECODED_FRAME_BYTES))
        except DicomParseError as error:
            raise DicomWebError(406, f"Cannot send this frame decoded: {error.message}") from None
        pixels = pixel_array(str(self.path), index=number - 1)
        if bits == 1:
            return np.packbits(pixels.astype(np.uint8).ravel(), bitorder="little").tobytes()
        return pixels.astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes()

    def stored_frame(self, number: int) -> bytes | FileSlice:
        """Frame `number` as the file holds it: its fragments joined, or native pixels."""
        if not self.compressed:
            return self.raw_frame(number)
        offsets = None
        if "ExtendedOffsetTable" in self.header and "ExtendedOffsetTableLengths" in self.header:
            offsets = (
                self.header.ExtendedOffsetTable,
                self.header.ExtendedOffsetTableLengths,
            )
        element = self.element
        if isinstance(element, RawDataElement) and element.value is None:
            with self.path.open("rb") as source:
                source.seek(element.value_tell)
                return get_frame(
                    source, number - 1, number_of_frames=self.count, extended_offsets=offsets
                )
        value = self.header[element.tag].value
        return get_frame(value, number - 1, number_of_frames=self.count, extended_offsets=offsets)


def frame_source(instance: Instance) -> FrameSource:
    path, _size = stored_file(instance)
    syntax = instance.transfer_syntax_uid
    header = read_header(path, syntax)
    for tag in PIXEL_TAGS:
        element = header.get_item(tag, keep_deferred=True)
        if element is not None:
            count = int(header.get("NumberOfFrames", 1) or 1)
            return FrameSource(path, syntax, header, element, max(count, 1))
    raise DicomWebError(404, f"Instance {instance.sop_instance_uid} has no pixel data (no frames).")


@dataclass(frozen=True)
class FrameAnswer:
    """How frames will be sent: decoded (`raw`) or as stored, and the parts' media type."""

    raw: bool
    part_type: str


def frame_answers(ranges: list[MediaRange], stored: str) -> tuple[list[FrameAnswer], list[str]]:
    """What the client accepts for frames, in its order, and why the rest is refused."""
    answers: list[FrameAnswer] = []
    reasons: list[str] = []
    stored_type = FRAME_MEDIA_TYPES.get(stored, OCTETS)
    for media_range in ranges:
        if media_range.anything:
            answers += [FrameAnswer(True, OCTETS), FrameAnswer(False, stored_type)]
            continue
        if media_range.media_type != "multipart/related":
            reasons.append("Frames are sent as multipart/related.")
            continue
        part_type, syntax = media_range.part_type or OCTETS, media_range.syntax
        if part_type in {"*/*", "*"}:
            # Any part type: PS3.18's default for frames (uncompressed) first, then as stored.
            answers += [FrameAnswer(True, OCTETS), FrameAnswer(False, stored_type)]
        elif part_type == OCTETS:
            if syntax is None or syntax in UNCOMPRESSED:
                answers.append(FrameAnswer(True, OCTETS))
            elif syntax in {"*", stored}:
                answers.append(FrameAnswer(False, OCTETS))
            else:
                reasons.append(f"Frames are stored as {stored} and are not transcoded.")
        elif part_type in DEFAULT_SYNTAX:
            wanted = syntax or DEFAULT_SYNTAX[part_type]
            # Compared by default syntax, as image/dicom-rle and image/x-dicom-rle are one type.
            if (
                wanted in {"*", stored}
                and DEFAULT_SYNTAX.get(stored_type) == DEFAULT_SYNTAX[part_type]
            ):
                answers.append(FrameAnswer(False, stored_type))
            else:
                reasons.append(f"Frames are stored as {stored} and are not transcoded.")
        else:
            reasons.append(f"{part_type} is not a frame media type offered here.")
    return answers, reasons


# -- rendering --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendering:
    """How to turn a frame into an image (PS3.18 8.3.5 rendered media type parameters)."""

    media_type: str = PNG
    window: tuple[float, float, str] | None = None
    viewport: tuple[int, int] | None = None
    quality: int = 90
    thumbnail: bool = False
    frame: int | None = None  # 1-based; None: the first (rendered) or middle (thumbnail)


def render(path: Path, how: Rendering) -> bytes:
    """One frame windowed like the series thumbnails, scaled and encoded; 406 if it can't be."""
    try:
        header = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as error:
        raise DicomWebError(
            406, f"Cannot render this object: it is not readable ({error})."
        ) from error
    frames = max(int(header.get("NumberOfFrames", 1) or 1), 1)
    number = how.frame or (frames // 2 + 1 if how.thumbnail else 1)
    if number > frames:
        raise DicomWebError(404, f"The instance has {frames} frame(s); there is no frame {number}.")
    try:
        check_decodable(header, limit=int(settings.PORTAL_MAX_DECODED_FRAME_BYTES))
    except DicomParseError as error:
        raise DicomWebError(406, f"Cannot render this object: {error.message}") from None
    try:
        pixels = pixel_array(str(path), index=number - 1)
    except Exception as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DicomWebError(406, f"Cannot render this object's pixels: {detail}") from error
    if how.window is not None:
        center, width, function = how.window
        header.WindowCenter, header.WindowWidth = center, width
        header.VOILUTFunction = WINDOW_FUNCTIONS[function]
        if "VOILUTSequence" in header:
            del header.VOILUTSequence
    try:
        image = frame_image(header, pixels)
    except Exception as error:
        raise DicomWebError(406, f"Cannot render this object's pixels: {error}") from error
    return encode_image(scaled(image, how), how)


def scaled(image: Image.Image, how: Rendering) -> Image.Image:
    if how.thumbnail:
        image.thumbnail(how.viewport or (THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        return image
    if how.viewport is None:
        return image
    ratio = min(how.viewport[0] / image.width, how.viewport[1] / image.height)
    size = (max(1, round(image.width * ratio)), max(1, round(image.height * ratio)))
    return image.resize(size, Image.Resampling.LANCZOS)


def encode_image(image: Image.Image, how: Rendering) -> bytes:
    out = io.BytesIO()
    if how.media_type == JPEG:
        image.convert("RGB" if image.mode not in {"L", "RGB"} else image.mode).save(
            out, format="JPEG", quality=how.quality
        )
    else:
        image.save(out, format="PNG")
    return out.getvalue()


def image_type(ranges: list[MediaRange]) -> str:
    for media_range in ranges:
        if media_range.media_type in {PNG, JPEG}:
            return media_range.media_type
        if media_range.anything or media_range.media_type == "image/*":
            return PNG
    asked = ", ".join(_describe(r) for r in ranges)
    raise DicomWebError(406, f"Cannot render as {asked}; image/png and image/jpeg are offered.")


def number_list(text: str, what: str, count: int) -> list[float]:
    pieces = [piece.strip() for piece in text.split(",")]
    try:
        values = [float(piece) for piece in pieces[:count]]
    except ValueError:
        values = []
    if len(values) != count or not all(np.isfinite(values)):
        raise DicomWebError(400, f"{what} is {count} comma-separated numbers; got {text[:80]!r}.")
    return values


def window_of(text: str) -> tuple[float, float, str]:
    pieces = text.split(",")
    if len(pieces) not in {2, 3}:
        raise DicomWebError(400, f"window is center,width[,function]; got {text[:80]!r}.")
    center, width = number_list(",".join(pieces[:2]), "window", 2)
    function = pieces[2].strip().lower() if len(pieces) == 3 else "linear"
    if width <= 0 or function not in WINDOW_FUNCTIONS:
        raise DicomWebError(
            400,
            "The window width must be positive and the function linear, linear-exact or sigmoid.",
        )
    return center, width, function


def viewport_of(text: str) -> tuple[int, int]:
    width, height = number_list(text, "viewport", 2) if text.count(",") == 1 else (0.0, 0.0)
    if not (0 < width <= MAX_VIEWPORT and 0 < height <= MAX_VIEWPORT) or not (
        width.is_integer() and height.is_integer()
    ):
        raise DicomWebError(
            400, f"viewport is width,height in pixels (1 to {MAX_VIEWPORT}); got {text[:80]!r}."
        )
    return int(width), int(height)


def quality_of(text: str) -> int:
    if not _FRAME_NUMBER.fullmatch(text) or not 1 <= int(text) <= 100:
        raise DicomWebError(400, f"quality is a number from 1 to 100; got {text[:80]!r}.")
    return int(text)


def shown_instance(target: Target) -> Instance:
    """The instance that stands for the target in an image: itself, or a middle one."""
    if target.instance is not None:
        return target.instance
    series_list = (
        [target.series] if target.series is not None else list(study_series(study=target.study))
    )
    for series in series_list:
        instance = series_middle_instance(series=series)
        if instance is not None:
            return instance
    raise DicomWebError(404, f"The {target.level} {target.uid} has no instances.")


# -- views ------------------------------------------------------------------------------------


class WadoView(DicomWebView):
    """Shared by the retrieve views: one `dicomweb.retrieve` audit row per request."""

    audit_action = "dicomweb.retrieve"

    def audit_retrieve(self, target: Target, instances: int, **details: Any) -> None:
        self.audit(
            action=self.audit_action,
            object_type=target.level,
            object_id=target.uid,
            details={"instances": instances, **details},
        )

    def absolute(self, name: str, **kwargs: str) -> str:
        return self.request.build_absolute_uri(reverse(name, kwargs=kwargs))

    def instance_url(self, instance: Instance, study: Study) -> str:
        return self.absolute(
            "dicomweb_instance",
            study=study.study_instance_uid,
            series=instance.series.series_instance_uid,
            instance=instance.sop_instance_uid,
        )


class RetrieveView(WadoView):
    """Study, series or instance as DICOM files (PS3.18 10.4.1.1.1)."""

    def get(
        self,
        request: HttpRequest,
        study: str,
        series: str | None = None,
        instance: str | None = None,
    ) -> HttpResponseBase:
        target = find_target(study, series, instance)
        instances = list(target.instances())
        if not instances:
            raise DicomWebError(404, f"The {target.level} {target.uid} has no instances.")
        answer = self.negotiate(target, instances)
        one = len(instances) == 1
        bodies = [stored_whole(item, check=one) for item in instances]
        total = sum(body.length for body in bodies)
        self.audit_retrieve(target, len(bodies), bytes=total, media_type=answer)
        if answer == "application/zip":
            entries = [
                (f"{item.series.series_instance_uid}/{item.sop_instance_uid}.dcm", item)
                for item in instances
            ]
            return streamed(
                request,
                lambda: zip_stream(entries),
                content_type=answer,
                length=None,
                Content_Disposition=f'attachment; filename="{target.uid}.zip"',
            )
        if answer == DICOM:
            body = bodies[0]
            return streamed(request, body.chunks, content_type=DICOM, length=body.length)
        parts = [
            Part(
                f"{DICOM}; transfer-syntax={item.transfer_syntax_uid}",
                body,
                self.instance_url(item, target.study),
            )
            for item, body in zip(instances, bodies, strict=True)
        ]
        return multipart_response(request, MultipartBody(parts, DICOM))

    def negotiate(self, target: Target, instances: list[Instance]) -> str:
        """`multipart`, `application/dicom` (one instance) or `application/zip`, or a 406."""
        stored = sorted({item.transfer_syntax_uid for item in instances})
        ranges, reasons = accepted(self.request), []
        for media_range in ranges:
            syntax = media_range.syntax
            as_stored = syntax in {None, "*"} or stored == [syntax]
            if media_range.anything:
                return "multipart"
            if media_range.media_type == "application/zip":
                return "application/zip"
            if media_range.media_type == "multipart/related" and media_range.part_type in {
                DICOM,
                "",
            }:
                if as_stored:
                    return "multipart"
                reasons.append(f"Stored as {', '.join(stored)}; objects are not transcoded.")
            elif media_range.media_type == DICOM:
                if target.level != "instance":
                    reasons.append(
                        f"A {target.level} is several objects: ask for "
                        f'multipart/related; type="{DICOM}".'
                    )
                elif as_stored:
                    return DICOM
                else:
                    reasons.append(f"Stored as {stored[0]}; objects are not transcoded.")
            else:
                reasons.append(
                    f'Objects are offered as multipart/related; type="{DICOM}", {DICOM} '
                    "(one instance) or application/zip."
                )
        raise _not_acceptable(f"this {target.level}", ranges, reasons)


class MetadataView(WadoView):
    """DICOM JSON of every instance of the study, series or instance (PS3.18 10.4.1.1.2)."""

    def get(
        self,
        request: HttpRequest,
        study: str,
        series: str | None = None,
        instance: str | None = None,
    ) -> HttpResponseBase:
        target = find_target(study, series, instance)
        if not accepts_dicom_json(request):
            reason = f"Metadata is offered as {DICOM_JSON}."
            raise _not_acceptable("metadata", accepted(request), [reason])
        instances = list(target.instances())
        if not instances:
            raise DicomWebError(404, f"The {target.level} {target.uid} has no instances.")
        documents = [self.metadata_of(item, target.study) for item in instances]
        body = json.dumps(documents, separators=(",", ":")).encode()
        self.audit_retrieve(target, len(documents), resource="metadata", bytes=len(body))
        return HttpResponse(body, content_type=DICOM_JSON)

    def metadata_of(self, instance: Instance, study: Study) -> dict[str, Any]:
        path, _size = stored_file(instance)
        keys = {
            "study": study.study_instance_uid,
            "series": instance.series.series_instance_uid,
            "instance": instance.sop_instance_uid,
        }

        def bulk_uri(tag: BaseTag) -> str:
            return self.absolute("dicomweb_bulkdata", **keys, tag=f"{tag:08X}")

        try:
            return instance_metadata(
                path, transfer_syntax=instance.transfer_syntax_uid, bulk_uri=bulk_uri
            )
        except Exception as error:
            logger.error("dicomweb: metadata of %s: %s", instance.sop_instance_uid, error)
            raise DicomWebError(
                503, f"The file of instance {instance.sop_instance_uid} could not be read."
            ) from error


class FramesView(WadoView):
    """Frames of an instance, decoded or as stored (PS3.18 10.4.1.1.3)."""

    def get(
        self, request: HttpRequest, study: str, series: str, instance: str, frames: str
    ) -> HttpResponseBase:
        target = find_target(study, series, instance)
        assert target.instance is not None
        source = frame_source(target.instance)
        numbers = frame_numbers(frames, source.count)
        ranges = accepted(request)
        answers, reasons = frame_answers(ranges, source.transfer_syntax)
        location = self.instance_url(target.instance, target.study) + f"/frames/{frames}"
        for answer in answers:
            decoded = (
                get_expected_length(source.header, "bytes") // source.count * len(numbers)
                if answer.raw and source.compressed
                else 0
            )
            if decoded > MAX_DECODED_BYTES:
                # Decoded frames are held until the answer is sent: bound what one request takes.
                reasons.append(
                    f"Decoding {len(numbers)} frames takes {decoded} bytes, over the "
                    f"{MAX_DECODED_BYTES} one request may; ask for fewer frames."
                )
                continue
            try:
                parts = [self.part(source, answer, number, location) for number in numbers]
            except DicomWebError:
                raise
            except Exception as error:
                detail = str(error).splitlines()[0] if str(error) else type(error).__name__
                reasons.append(f"The frames cannot be decoded here ({detail}).")
                continue
            self.audit_retrieve(
                target,
                1,
                frames=numbers,
                decoded=answer.raw and source.compressed,
                media_type=answer.part_type,
                bytes=sum(part.length for part in parts),
            )
            return multipart_response(request, MultipartBody(parts, answer.part_type))
        raise _not_acceptable("these frames", ranges, reasons)

    @staticmethod
    def part(source: FrameSource, answer: FrameAnswer, number: int, location: str) -> Part:
        if answer.raw:
            body, syntax = source.raw_frame(number), EXPLICIT_LE
        else:
            body = source.stored_frame(number)
            syntax = source.transfer_syntax if source.compressed else EXPLICIT_LE
        return Part(f"{answer.part_type}; transfer-syntax={syntax}", body, location)


class BulkDataView(WadoView):
    """One top-level binary value of an instance, as the metadata's BulkDataURI names it."""

    def get(
        self, request: HttpRequest, study: str, series: str, instance: str, tag: str
    ) -> HttpResponseBase:
        target = find_target(study, series, instance)
        assert target.instance is not None
        if not _TAG.fullmatch(tag):
            raise DicomWebError(
                400, f"A bulk data tag is 8 hex digits (7FE00010); got {tag[:80]!r}."
            )
        ranges = accepted(request)
        single = any(r.media_type == OCTETS for r in ranges)
        if not single and not any(
            r.anything
            or (r.media_type == "multipart/related" and r.part_type in {OCTETS, "", "*/*", "*"})
            for r in ranges
        ):
            raise _not_acceptable("bulk data", ranges, [f"Bulk data is offered as {OCTETS}."])
        path, _size = stored_file(target.instance)
        element_tag = Tag(int(tag, 16))
        body = bulk_body(path, target.instance.transfer_syntax_uid, element_tag)
        part = Part(OCTETS, body)
        self.audit_retrieve(target, 1, bulk=f"{element_tag:08X}", bytes=part.length)
        multipart = MultipartBody([part], OCTETS)
        if single and not any(r.media_type == "multipart/related" for r in ranges):
            return streamed(
                request,
                lambda: body_chunks(body),
                content_type=OCTETS,
                length=part.length,
            )
        return multipart_response(request, multipart)


class RenderedView(WadoView):
    """An instance, series or study as one consumer image (PS3.18 10.4.1.1.4)."""

    thumbnail = False

    def get(
        self,
        request: HttpRequest,
        study: str,
        series: str | None = None,
        instance: str | None = None,
        frames: str | None = None,
    ) -> HttpResponseBase:
        target = find_target(study, series, instance)
        how = self.rendering(request)
        if frames is not None:
            # One frame of the instance (PS3.18 10.4.1.1.4: `.../frames/{n}/rendered`).
            if not _FRAME_NUMBER.fullmatch(frames) or int(frames) < 1:
                raise DicomWebError(400, f"Render one frame, numbered from 1; got {frames!r}.")
            how = replace(how, frame=int(frames))
        shown = shown_instance(target)
        path, _size = stored_file(shown)
        image = render(path, how)
        self.audit_retrieve(
            target,
            1,
            rendered=shown.sop_instance_uid,
            media_type=how.media_type,
            bytes=len(image),
        )
        return HttpResponse(image, content_type=how.media_type)

    def rendering(self, request: HttpRequest) -> Rendering:
        params = request.GET
        return Rendering(
            media_type=image_type(accepted(request)),
            window=window_of(params["window"]) if params.get("window") else None,
            viewport=viewport_of(params["viewport"]) if params.get("viewport") else None,
            quality=quality_of(params["quality"]) if params.get("quality") else 90,
            thumbnail=self.thumbnail,
        )


class ThumbnailView(RenderedView):
    """A small image of the instance, series or study (PS3.18 10.4.1.1.5)."""

    thumbnail = True


class WadoUriView(WadoView):
    """`GET /wado?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..` (PS3.18 9)."""

    def get(self, request: HttpRequest) -> HttpResponseBase:
        params = request.GET
        if params.get("requestType") != "WADO":
            raise DicomWebError(400, "requestType must be WADO.")
        missing = [key for key in ("studyUID", "seriesUID", "objectUID") if not params.get(key)]
        if missing:
            raise DicomWebError(400, f"WADO-URI needs {', '.join(missing)}.")
        target = find_target(params["studyUID"], params["seriesUID"], params["objectUID"])
        assert target.instance is not None
        media_type = self.content_type(params.get("contentType", ""))
        if params.get("anonymize", "").lower() == "yes":
            raise DicomWebError(406, "Objects cannot be anonymized here.")
        if media_type == DICOM:
            wanted = params.get("transferSyntax")
            stored = target.instance.transfer_syntax_uid
            if wanted and wanted not in {"*", stored}:
                raise DicomWebError(406, f"Stored as {stored}; objects are not transcoded.")
            body = stored_whole(target.instance)
            self.audit_retrieve(target, 1, media_type=DICOM, bytes=body.length)
            return streamed(
                request,
                body.chunks,
                content_type=DICOM,
                length=body.length,
                Content_Disposition=f'attachment; filename="{target.uid}.dcm"',
            )
        path, _size = stored_file(target.instance)
        image = render(path, self.rendering(media_type))
        self.audit_retrieve(target, 1, media_type=media_type, bytes=len(image))
        return HttpResponse(image, content_type=media_type)

    @staticmethod
    def content_type(value: str) -> str:
        """The first offered type of the `contentType` list; image/jpeg when there is none."""
        wanted = [media_type_parse(piece)[0] for piece in value.split(",") if piece.strip()]
        for media_type in wanted or [JPEG]:
            if media_type in {DICOM, JPEG, PNG}:
                return media_type
            if media_type in {"image/*", "*/*"}:
                return JPEG
        raise DicomWebError(
            406,
            f"contentType {value[:80]!r} is not offered: application/dicom, image/jpeg, image/png.",
        )

    def rendering(self, media_type: str) -> Rendering:
        params = self.request.GET
        center, width = params.get("windowCenter"), params.get("windowWidth")
        if (center is None) != (width is None):
            raise DicomWebError(400, "windowCenter and windowWidth go together.")
        rows, columns = params.get("rows"), params.get("columns")
        viewport = None
        if rows or columns:
            viewport = viewport_of(f"{columns or MAX_VIEWPORT},{rows or MAX_VIEWPORT}")
        frame = params.get("frameNumber")
        if frame is not None and not (_FRAME_NUMBER.fullmatch(frame) and int(frame) > 0):
            raise DicomWebError(400, f"frameNumber is a number from 1; got {frame[:80]!r}.")
        quality = params.get("imageQuality")
        return Rendering(
            media_type=media_type,
            window=window_of(f"{center},{width}") if center is not None else None,
            viewport=viewport,
            quality=quality_of(quality) if quality else 90,
            frame=int(frame) if frame else None,
        )
