"""Series thumbnails: one DICOM file's pixels, windowed into a small PNG (no database here)."""

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from django.conf import settings
from PIL import Image
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

from studies.dicom import DEFER_BYTES, DicomParseError, check_decodable


class ThumbnailError(Exception):
    """The pixels could not be turned into an image; `reason` is shown in place of it."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def render_thumbnail(
    path: str | os.PathLike[str], *, size: int = 128, max_frame_bytes: int | None = None
) -> bytes:
    """A PNG of at most `size` x `size` of the file's middle frame: only that frame is read
    and decoded, and only if it fits `max_frame_bytes` decoded."""
    limit = max_frame_bytes or int(settings.PORTAL_MAX_DECODED_FRAME_BYTES)
    try:
        ds = pydicom.dcmread(path, defer_size=DEFER_BYTES)  # the pixels stay on disk
    except Exception as error:
        raise ThumbnailError(f"Not a readable DICOM file ({error}).") from error
    if "PixelData" not in ds:
        raise ThumbnailError("This object has no image (no pixel data).")
    try:
        check_decodable(ds, limit=limit)
    except DicomParseError as error:
        raise ThumbnailError(error.message) from None
    frames = max(int(getattr(ds, "NumberOfFrames", 1) or 1), 1)
    try:
        pixels = pixel_array(os.fspath(path), index=frames // 2)
    except Exception as error:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", "unknown transfer syntax")
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ThumbnailError(f"Pixels cannot be decoded here ({name}): {detail}") from error
    image = frame_image(ds, pixels)
    image.thumbnail((size, size))
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def frame_image(ds: Any, pixels: np.ndarray) -> Image.Image:
    """One decoded frame as an 8-bit image: palette applied, greys windowed (VOI LUT or
    window of the header, else the frame's own range), MONOCHROME1 inverted."""
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if getattr(ds, "PhotometricInterpretation", "") == "PALETTE COLOR":
        # Without a usable palette the indices still make a recognisable grey image.
        with contextlib.suppress(Exception):
            pixels, samples = apply_color_lut(pixels, ds), 3
    if samples > 1:
        # pydicom converts YCbCr to RGB when it decodes, so colour data is RGB here.
        return Image.fromarray(_stretch(pixels.astype(np.float64)), mode="RGB")
    grey = _window(ds, pixels)
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        grey = 255 - grey
    return Image.fromarray(grey, mode="L")


def _window(ds: Any, pixels: np.ndarray) -> np.ndarray:
    """The file's VOI LUT or window when it has one, otherwise its own value range."""
    values = apply_modality_lut(pixels, ds)
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        try:
            values = apply_voi_lut(values, ds)
        except Exception:  # a broken VOI module still leaves min/max windowing
            values = apply_modality_lut(pixels, ds)
    return _stretch(np.asarray(values, dtype=np.float64))


def _stretch(values: np.ndarray) -> np.ndarray:
    low, high = float(np.min(values)), float(np.max(values))
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def write_thumbnail(png: bytes, target: Path) -> None:
    """Replace `target` atomically, so a reader never sees half a PNG."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(png)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
