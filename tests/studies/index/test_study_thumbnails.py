"""Thumbnails from real pixel data: windowing, MONOCHROME1, colour, multi-frame, failures;
the task that makes them, the dashboard's activity chart."""

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest
from django_tenants.utils import schema_context
from PIL import Image
from pydicom.data import get_testdata_file

from accounts.models import Role
from studies.index.services import thumbnail_queue_for_new_series
from studies.index.thumbnails import ThumbnailError, render_thumbnail
from studies.models import IngestJob, Series
from studies.tasks import make_series_thumbnail
from tests.conftest import logged_in, tenant_client
from tests.studies.index.test_study_pages import dicom, store


def bundled(name: str) -> Path:
    return Path(get_testdata_file(name, download=False))


def image(png: bytes) -> Image.Image:
    assert png.startswith(b"\x89PNG")
    return Image.open(io.BytesIO(png))


@pytest.mark.parametrize(
    ("name", "mode", "size"),
    [
        ("CT_small.dcm", "L", (128, 128)),
        ("MR_small.dcm", "L", (64, 64)),
        ("MR_small_RLE.dcm", "L", (64, 64)),
        ("JPEG2000.dcm", "L", (32, 128)),
        ("SC_rgb_rle_2frame.dcm", "RGB", (100, 100)),
        ("examples_palette.dcm", "RGB", (128, 56)),
    ],
)
def test_real_files_become_small_pngs(name, mode, size):
    thumb = image(render_thumbnail(bundled(name)))
    assert thumb.mode == mode and thumb.size == size
    assert np.asarray(thumb).std() > 0  # an image, not a flat square


def test_min_max_windowing_uses_the_whole_grey_range(tmp_path):
    ds = pydicom.dcmread(bundled("MR_small.dcm"))
    for keyword in ("WindowCenter", "WindowWidth"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.save_as(tmp_path / "mr.dcm")
    pixels = np.asarray(image(render_thumbnail(tmp_path / "mr.dcm")))
    assert (pixels.min(), pixels.max()) == (0, 255)


def test_monochrome1_is_inverted(tmp_path):
    ds = pydicom.dcmread(bundled("MR_small.dcm"))
    plain = np.asarray(image(render_thumbnail(bundled("MR_small.dcm"))), dtype=int)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "inverted.dcm")
    inverted = np.asarray(image(render_thumbnail(tmp_path / "inverted.dcm")), dtype=int)
    assert np.array_equal(inverted, 255 - plain)


def test_the_middle_frame_of_a_multi_frame_image_is_shown(tmp_path):
    ds = pydicom.dcmread(bundled("MR_small.dcm"))
    frames = np.stack(
        [np.zeros_like(ds.pixel_array), ds.pixel_array, np.zeros_like(ds.pixel_array)]
    )
    ds.NumberOfFrames, ds.PixelData = 3, frames.tobytes()
    ds.save_as(tmp_path / "multi.dcm")
    assert np.asarray(image(render_thumbnail(tmp_path / "multi.dcm"))).std() > 0


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("JPEG-lossy.dcm", "cannot be decoded"),
        ("rtplan.dcm", "no pixel data"),
        ("README.txt", "Not a readable DICOM file"),
    ],
)
def test_undecodable_input_raises_with_a_reason(name, reason):
    with pytest.raises(ThumbnailError) as failure:
        render_thumbnail(bundled("CT_small.dcm").parent / name)
    assert reason in failure.value.reason


def test_a_small_file_claiming_a_huge_frame_is_not_decoded(tmp_path):
    """MR_small_RLE.dcm (a few KiB) saying it is 60000 x 60000: decoding would allocate
    7.2 GB; the thumbnail is refused from the header, with the size it claims."""
    ds = pydicom.dcmread(bundled("MR_small_RLE.dcm"))
    ds.Rows = ds.Columns = 60000
    path = tmp_path / "claims.dcm"
    ds.save_as(path)
    tracemalloc.start()
    try:
        with pytest.raises(ThumbnailError) as refused:
            render_thumbnail(path, max_frame_bytes=64 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "7200000000 bytes decoded" in refused.value.reason
    assert peak < 8 << 20


def test_the_task_makes_the_thumbnail_of_the_series(
    alpha, storage, django_capture_on_commit_callbacks
):
    store(alpha, dicom("CT_small.dcm"))
    with schema_context(alpha.schema_name):
        series = Series.objects.get()
        assert series.thumbnail == ""
        assert make_series_thumbnail.apply(args=[series.pk]).get() is True
        series.refresh_from_db()
        png = Path(alpha.storage_root) / series.thumbnail
        assert series.thumbnail == f".thumbnails/{series.series_instance_uid}.png"
        assert image(png.read_bytes()).size == (128, 128)


def test_the_task_refuses_the_public_schema(alpha, storage):
    with pytest.raises(Exception, match="must be sent from a tenant"):
        make_series_thumbnail.apply(args=[1]).get()


def test_queueing_waits_for_the_commit(alpha, storage, django_capture_on_commit_callbacks):
    with schema_context(alpha.schema_name), django_capture_on_commit_callbacks() as callbacks:
        thumbnail_queue_for_new_series([1, 2])
    assert len(callbacks) == 2


def test_the_dashboard_shows_counts_and_ingest_activity(alpha, beta, storage, make_user):
    store(alpha, dicom(), dicom())
    store(beta, dicom(), dicom(), dicom())
    user = make_user(alpha, role=Role.VIEWER)
    page = logged_in(tenant_client(alpha), user.username).get("/")
    assert page.context["archive"] == {"studies": 2, "series": 2, "instances": 2}
    activity = page.context["activity"]
    assert len(activity.days) == 14 and activity.total == 2
    assert activity.bars[-1]["count"] == 2 and activity.bars[-1]["height"] == 90
    body = page.content.decode()
    assert "Ingest activity" in body and 'data-count="2"' in body
    with schema_context(alpha.schema_name):
        assert list(page.context["recent_ingests"]) == list(IngestJob.objects.all()[:5])
