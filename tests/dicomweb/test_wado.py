"""WADO-RS and WADO-URI on real files: stored bytes out, metadata and bulk data, frames
decoded and as stored, rendered images, negotiation errors, roles, audit and isolation."""

import hashlib
import io
import json
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np
import pydicom
import pytest
from django.db import connection
from django.test import Client
from django_tenants.utils import schema_context
from PIL import Image
from pydicom.encaps import generate_frames
from pydicom.uid import generate_uid

from accounts.models import Role
from accounts.services import api_token_create
from audit.models import AuditEvent
from studies.models import Instance
from studies.storage import instance_path
from tenants.models import Tenant
from tests.conftest import logged_in, tenant_client
from tests.studies.conftest import storage  # noqa: F401
from tests.studies.ingest.test_ingest import bundled, distinct_instances, ingest

RETRIEVE = "dicomweb.retrieve"
ANY_SYNTAX = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


def dataset(name: str, **tags: object) -> pydicom.Dataset:
    ds = pydicom.dcmread(bundled(name))
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def encoded(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@dataclass
class Archive:
    study: str
    series: list[str]
    ct: list[pydicom.Dataset]  # the study's three instances, in the order sent
    files: dict[str, bytes]  # SOP instance UID -> the bytes sent
    rle: pydicom.Dataset
    native_multiframe: pydicom.Dataset
    jpeg_lossy: pydicom.Dataset
    jpeg_ls: pydicom.Dataset
    jpeg2000: pydicom.Dataset

    def path(self, ds: pydicom.Dataset) -> str:
        return f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"


@pytest.fixture
def archive(alpha, storage) -> Archive:  # noqa: F811
    """alpha holds a three-instance CT study in two series and one file per pixel encoding."""
    study, series = generate_uid(), [generate_uid(), generate_uid()]
    ct = [
        dataset(
            "CT_small.dcm",
            StudyInstanceUID=study,
            SeriesInstanceUID=series_uid,
            SOPInstanceUID=generate_uid(),
            SeriesNumber=series_number,
            InstanceNumber=number,
        )
        for series_uid, series_number, number in (
            (series[0], 1, 2),
            (series[0], 1, 1),
            (series[1], 2, 7),
        )
    ]
    native = dataset("SC_rgb_rle_2frame.dcm", SOPInstanceUID=generate_uid())
    native.decompress()
    others = {
        name: pydicom.dcmread(io.BytesIO(data))
        for name, data in distinct_instances(
            [
                "SC_rgb_rle_2frame.dcm",
                "JPEG-lossy.dcm",
                "MR_small_jpeg_ls_lossless.dcm",
                "JPEG2000.dcm",
            ]
        )
    }
    sent = [encoded(ds) for ds in ct] + [encoded(native)]
    sent += [encoded(ds) for ds in others.values()]
    with schema_context(alpha.schema_name):
        job = ingest([(f"{index}.dcm", data) for index, data in enumerate(sent)])
        assert job.stored == len(sent), list(job.items.values_list("reason", flat=True))
    files = {pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID: data for data in sent}
    return Archive(
        study=study,
        series=series,
        ct=ct,
        files=files,
        rle=others["SC_rgb_rle_2frame.dcm"],
        native_multiframe=pydicom.dcmread(io.BytesIO(encoded(native))),
        jpeg_lossy=others["JPEG-lossy.dcm"],
        jpeg_ls=others["MR_small_jpeg_ls_lossless.dcm"],
        jpeg2000=others["JPEG2000.dcm"],
    )


def token_client(
    tenant: Tenant, make_user: Callable[..., object], role: str = Role.VIEWER
) -> Client:
    user = make_user(tenant, role=role)
    with schema_context(tenant.schema_name):
        _token, raw = api_token_create(user=user, name="viewer", scope="read")
    return tenant_client(tenant, HTTP_AUTHORIZATION=f"Bearer {raw}")


@pytest.fixture
def viewer(alpha, make_user) -> Client:
    return token_client(alpha, make_user)


def retrieve_rows(tenant: Tenant) -> list[AuditEvent]:
    with schema_context(tenant.schema_name):
        return list(AuditEvent.objects.filter(action=RETRIEVE).order_by("id"))


def body_of(response) -> bytes:
    if response.streaming:
        return b"".join(response.streaming_content)
    return response.content


def parts_of(response) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/related answer, parsed by hand (RFC 2046 5.1.1)."""
    content_type = response["Content-Type"]
    assert content_type.startswith("multipart/related"), content_type
    boundary = re.search(r"boundary=\"?([^\";]+)", content_type).group(1).encode()
    body = body_of(response)
    assert int(response["Content-Length"]) == len(body)
    assert body.startswith(b"--" + boundary + b"\r\n")
    assert body.endswith(b"\r\n--" + boundary + b"--\r\n")
    pieces = (b"\r\n" + body).split(b"\r\n--" + boundary)[1:-1]
    parts = []
    for piece in pieces:
        head, _, data = piece[2:].partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        assert int(headers["Content-Length"]) == len(data)
        parts.append((headers, data))
    return parts


def reason(response) -> str:
    assert response["Warning"].startswith("299 ")
    return json.loads(response.content)["detail"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- retrieve ---------------------------------------------------------------------------------


def test_study_series_and_instance_stream_every_stored_file_byte_for_byte(alpha, archive, viewer):
    ct = archive.ct
    with schema_context(alpha.schema_name):
        stored = {
            i.sop_instance_uid: sha(instance_path(i).read_bytes())
            for i in Instance.objects.select_related("medium")
        }
    cases = [
        (f"/dicom-web/studies/{archive.study}", [ct[1], ct[0], ct[2]], "study", archive.study),
        (archive.path(ct[0]), [ct[1], ct[0]], "series", archive.series[0]),
        (f"{archive.path(ct[2])}/instances/{ct[2].SOPInstanceUID}", [ct[2]], "instance", None),
    ]
    for url, expected, level, uid in cases:
        before = len(retrieve_rows(alpha))
        response = viewer.get(url, HTTP_ACCEPT='multipart/related; type="application/dicom"')
        assert response.status_code == 200, response.content
        assert response.streaming
        parts = parts_of(response)
        assert [sha(data) for _h, data in parts] == [stored[ds.SOPInstanceUID] for ds in expected]
        assert [sha(data) for _h, data in parts] == [
            sha(archive.files[ds.SOPInstanceUID]) for ds in expected
        ]
        headers = parts[0][0]
        assert headers["Content-Type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
        assert headers["Content-Location"].endswith(f"/instances/{expected[0].SOPInstanceUID}")
        rows = retrieve_rows(alpha)[before:]
        assert [(r.object_type, r.object_id, r.details["instances"]) for r in rows] == [
            (level, uid or expected[0].SOPInstanceUID, len(expected))
        ]


def test_accept_negotiation_answers_as_stored_or_refuses_with_a_reason(archive, viewer):
    study = f"/dicom-web/studies/{archive.study}"
    instance = f"{archive.path(archive.ct[0])}/instances/{archive.ct[0].SOPInstanceUID}"
    ok = [
        (study, ""),
        (study, "*/*"),
        (study, 'multipart/related; type="application/dicom"; transfer-syntax=*'),
        (study, 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1'),
        (study, 'image/png, multipart/related; type="application/dicom"; q=0.5'),
    ]
    for url, accept in ok:
        response = viewer.get(url, HTTP_ACCEPT=accept)
        assert response.status_code == 200, (accept, response.content)
        assert len(parts_of(response)) == 3
    refused = [
        (
            study,
            'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50',
            "not transcoded",
        ),
        (study, "application/dicom", "several objects"),
        (study, "image/png", "offered"),
        (instance, "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.90", "not transcoded"),
    ]
    for url, accept, why in refused:
        response = viewer.get(url, HTTP_ACCEPT=accept)
        assert response.status_code == 406, accept
        assert why in reason(response)
    single = viewer.get(instance, HTTP_ACCEPT="application/dicom")
    assert (single.status_code, single["Content-Type"]) == (200, "application/dicom")
    assert body_of(single) == archive.files[archive.ct[0].SOPInstanceUID]
    zipped = viewer.get(study, HTTP_ACCEPT="application/zip")
    assert zipped.streaming and zipped["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(body_of(zipped))) as archive_zip:
        names = archive_zip.namelist()
        assert len(names) == 3
        first = archive_zip.read(names[0])
    assert first in archive.files.values()


def test_the_stream_reads_only_files_after_the_view_returned(
    archive, viewer, django_assert_num_queries
):
    """The body is produced after the middleware may have reset the schema: no queries."""
    response = viewer.get(f"/dicom-web/studies/{archive.study}")
    connection.set_schema_to_public()
    with django_assert_num_queries(0):
        parts = parts_of(response)
    assert [data for _h, data in parts] == [
        archive.files[ds.SOPInstanceUID] for ds in (archive.ct[1], archive.ct[0], archive.ct[2])
    ]


def test_head_gives_the_headers_without_a_body(archive, viewer):
    url = f"/dicom-web/studies/{archive.study}"
    got = viewer.get(url)
    head = viewer.head(url)
    assert head.status_code == 200
    assert head["Content-Length"] == got["Content-Length"]
    assert head["Content-Type"].startswith('multipart/related; type="application/dicom"')
    assert head.content == b""


def test_missing_or_malformed_objects_are_400_or_404_with_a_reason(alpha, archive, viewer):
    ct = archive.ct
    other_series = (
        f"/dicom-web/studies/{archive.jpeg_ls.StudyInstanceUID}/series/{ct[0].SeriesInstanceUID}"
    )
    cases = [
        (f"/dicom-web/studies/{generate_uid()}", 404, "no study"),
        (f"/dicom-web/studies/{archive.study}/series/{generate_uid()}", 404, "has no series"),
        (f"{archive.path(ct[0])}/instances/{ct[2].SOPInstanceUID}", 404, "has no instance"),
        (other_series, 404, "has no series"),
        ("/dicom-web/studies/1.2.abc", 400, "not a valid UID"),
        (f"/dicom-web/studies/{archive.study}/series/..", 400, "not a valid UID"),
    ]
    for url, status, why in cases:
        before = len(retrieve_rows(alpha))
        response = viewer.get(url)
        assert response.status_code == status, url
        assert why in reason(response)
        if status == 404:
            rows = retrieve_rows(alpha)[before:]
            assert [row.outcome for row in rows] == ["failure"]


# -- metadata and bulk data -------------------------------------------------------------------


def test_metadata_points_pixel_data_at_bulk_data_that_gives_its_bytes(alpha, archive, viewer):
    response = viewer.get(f"{archive.path(archive.ct[0])}/metadata")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/dicom+json"
    documents = response.json()
    assert [d["00200013"]["Value"] for d in documents] == [[1], [2]]  # by InstanceNumber
    first = documents[0]
    assert first["00080018"]["Value"] == [archive.ct[1].SOPInstanceUID]
    assert first["00083002"] == {"vr": "UI", "Value": ["1.2.840.10008.1.2.1"]}
    assert first["00020010"] == {"vr": "UI", "Value": ["1.2.840.10008.1.2.1"]}
    pixel = first["7FE00010"]
    assert set(pixel) == {"vr", "BulkDataURI"} and pixel["vr"] == "OW"
    uri = urlsplit(pixel["BulkDataURI"])
    assert uri.netloc == "alpha.localhost"
    assert uri.path.endswith(f"/instances/{archive.ct[1].SOPInstanceUID}/bulk/7FE00010")
    before = len(retrieve_rows(alpha))
    bulk = viewer.get(uri.path)
    assert bulk.status_code == 200 and bulk.streaming
    [(headers, data)] = parts_of(bulk)
    assert headers["Content-Type"] == "application/octet-stream"
    assert data == archive.ct[1].PixelData
    assert len(retrieve_rows(alpha)) == before + 1
    assert viewer.get(uri.path.replace("7FE00010", "00091234")).status_code == 404
    assert viewer.get(uri.path.replace("7FE00010", "7FE0")).status_code == 400


def test_metadata_of_encapsulated_pixels_and_the_bulk_value_as_stored(archive, viewer):
    rle = archive.rle
    url = f"{archive.path(rle)}/instances/{rle.SOPInstanceUID}/metadata"
    [document] = viewer.get(url).json()
    assert document["00083002"]["Value"] == ["1.2.840.10008.1.2.5"]
    assert "InlineBinary" not in document["7FE00010"]
    bulk = viewer.get(urlsplit(document["7FE00010"]["BulkDataURI"]).path)
    [(_headers, data)] = parts_of(bulk)
    assert data == rle.PixelData
    refused = viewer.get(url, HTTP_ACCEPT='multipart/related; type="application/dicom+xml"')
    assert refused.status_code == 406 and "application/dicom+json" in reason(refused)


# -- frames -----------------------------------------------------------------------------------


def frames_url(archive: Archive, ds: pydicom.Dataset, frames: str) -> str:
    return f"{archive.path(ds)}/instances/{ds.SOPInstanceUID}/frames/{frames}"


def test_frames_are_pydicoms_decoded_frames_for_native_and_rle(alpha, archive, viewer):
    for ds in (archive.native_multiframe, archive.rle):
        before = len(retrieve_rows(alpha))
        response = viewer.get(
            frames_url(archive, ds, "2,1"),
            HTTP_ACCEPT='multipart/related; type="application/octet-stream"',
        )
        assert response.status_code == 200, response.content
        assert response.streaming
        parts = parts_of(response)
        decoded = ds.pixel_array
        assert [data for _h, data in parts] == [decoded[1].tobytes(), decoded[0].tobytes()]
        assert parts[0][0]["Content-Type"] == (
            "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
        )
        assert len(retrieve_rows(alpha)) == before + 1
    single = viewer.get(frames_url(archive, archive.ct[0], "1"))
    [(_headers, data)] = parts_of(single)
    assert data == archive.ct[0].PixelData


def test_frames_in_the_stored_syntax_are_the_stored_fragments(archive, viewer):
    rle = archive.rle
    response = viewer.get(frames_url(archive, rle, "1,2"), HTTP_ACCEPT=ANY_SYNTAX)
    parts = parts_of(response)
    assert [data for _h, data in parts] == list(generate_frames(rle.PixelData, number_of_frames=2))
    assert parts[0][0]["Content-Type"].endswith("transfer-syntax=1.2.840.10008.1.2.5")
    lossy = archive.jpeg_lossy
    accept = 'multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.51'
    response = viewer.get(frames_url(archive, lossy, "1"), HTTP_ACCEPT=accept)
    assert response.status_code == 200
    assert response["Content-Type"].startswith('multipart/related; type="image/jpeg"')
    [(headers, data)] = parts_of(response)
    assert headers["Content-Type"] == "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.51"
    assert data == next(generate_frames(lossy.PixelData, number_of_frames=1))
    other = 'multipart/related; type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.50'
    refused = viewer.get(frames_url(archive, lossy, "1"), HTTP_ACCEPT=other)
    assert refused.status_code == 406 and "not transcoded" in reason(refused)


def test_undecodable_frames_are_406_unless_the_stored_syntax_is_accepted(archive, viewer):
    # 12-bit JPEG Extended: neither Pillow nor any installed plugin decodes it.
    lossy = archive.jpeg_lossy
    url = frames_url(archive, lossy, "1")
    refused = viewer.get(url, HTTP_ACCEPT='multipart/related; type="application/octet-stream"')
    assert refused.status_code == 406
    assert "cannot be decoded" in reason(refused)
    stored = viewer.get(url, HTTP_ACCEPT=ANY_SYNTAX)
    [(_headers, data)] = parts_of(stored)
    assert data == next(generate_frames(lossy.PixelData, number_of_frames=1))
    anything = viewer.get(url, HTTP_ACCEPT="*/*")
    assert parts_of(anything)[0][1] == data


def test_jpeg_ls_frames_are_decoded_to_their_pixels(archive, viewer):
    jpeg_ls = archive.jpeg_ls
    response = viewer.get(
        frames_url(archive, jpeg_ls, "1"),
        HTTP_ACCEPT='multipart/related; type="application/octet-stream"',
    )
    [(_headers, data)] = parts_of(response)
    assert data == jpeg_ls.pixel_array.tobytes()
    # Any part type (dicomweb-client's default) gets PS3.18's default: uncompressed.
    any_part = viewer.get(
        frames_url(archive, jpeg_ls, "1"), HTTP_ACCEPT='multipart/related; type="*/*"'
    )
    assert parts_of(any_part)[0][1] == data


@pytest.mark.parametrize(
    ("frames", "status", "why"),
    [
        ("0", 400, "numbered from 1"),
        ("1,x", 400, "comma-separated"),
        ("%20", 400, "comma-separated"),
        ("-1", 400, "comma-separated"),
        ("3", 404, "no frame 3"),
        ("1,2,1", 400, "3 frame numbers"),
    ],
)
def test_frame_numbers_that_are_malformed_or_missing(archive, viewer, frames, status, why):
    response = viewer.get(frames_url(archive, archive.rle, frames))
    assert response.status_code == status
    assert why in reason(response)


# -- rendered and thumbnails ------------------------------------------------------------------


def image_of(response, kind: str) -> Image.Image:
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"] == f"image/{kind}"
    image = Image.open(io.BytesIO(response.content))
    assert image.format == kind.upper()
    return image


def test_rendered_png_and_jpeg_at_the_size_asked(alpha, archive, viewer):
    ct = archive.ct[0]
    url = f"{archive.path(ct)}/instances/{ct.SOPInstanceUID}/rendered"
    before = len(retrieve_rows(alpha))
    assert image_of(viewer.get(url), "png").size == (128, 128)
    assert len(retrieve_rows(alpha)) == before + 1
    jpeg = image_of(viewer.get(url + "?quality=50", HTTP_ACCEPT="image/jpeg"), "jpeg")
    assert jpeg.size == (128, 128)
    assert image_of(viewer.get(url + "?viewport=64,32"), "png").size == (32, 32)
    windowed = viewer.get(url + "?window=40,400,linear")
    plain = viewer.get(url)
    assert image_of(windowed, "png").tobytes() != image_of(plain, "png").tobytes()
    rgb = archive.rle
    colour = f"{archive.path(rgb)}/instances/{rgb.SOPInstanceUID}/rendered"
    assert image_of(viewer.get(colour), "png").mode == "RGB"
    j2k = archive.jpeg2000
    tall = viewer.get(
        f"{archive.path(j2k)}/instances/{j2k.SOPInstanceUID}/rendered?viewport=100,100",
        HTTP_ACCEPT="image/*",
    )
    assert image_of(tall, "png").size == (25, 100)


def test_series_and_study_images_and_thumbnails(archive, viewer):
    series = archive.path(archive.ct[0])
    study = f"/dicom-web/studies/{archive.study}"
    for url in (f"{series}/rendered", f"{study}/rendered"):
        assert image_of(viewer.get(url), "png").size == (128, 128)
    for url in (f"{series}/thumbnail", f"{study}/thumbnail", f"{series}/thumbnail?viewport=50,50"):
        width, height = image_of(viewer.get(url), "png").size
        assert width <= 128 and height <= 128
    thumb = viewer.get(f"{study}/thumbnail", HTTP_ACCEPT="image/jpeg")
    assert image_of(thumb, "jpeg").size == (128, 128)


@pytest.mark.parametrize(
    ("query", "accept", "status", "why"),
    [
        ("", "image/gif", 406, "image/png and image/jpeg"),
        ("?window=40", "", 400, "center,width"),
        ("?window=40,-1", "", 400, "positive"),
        ("?window=40,400,cubic", "", 400, "sigmoid"),
        ("?viewport=0,10", "", 400, "viewport"),
        ("?viewport=10,10,5,5,5,5", "", 400, "viewport"),
        ("?quality=101", "image/jpeg", 400, "1 to 100"),
    ],
)
def test_rendered_parameters_that_are_refused(archive, viewer, query, accept, status, why):
    ct = archive.ct[0]
    url = f"{archive.path(ct)}/instances/{ct.SOPInstanceUID}/rendered{query}"
    response = viewer.get(url, HTTP_ACCEPT=accept) if accept else viewer.get(url)
    assert response.status_code == status
    assert why in reason(response)


def test_frames_larger_decoded_than_the_limit_are_not_decoded(archive, viewer, settings):
    settings.PORTAL_MAX_DECODED_FRAME_BYTES = 10_000  # the RLE frames are 100 x 100 x 3
    rle = archive.rle
    instance = f"{archive.path(rle)}/instances/{rle.SOPInstanceUID}"
    rendered = viewer.get(f"{instance}/rendered")
    assert rendered.status_code == 406 and "30000 bytes decoded" in reason(rendered)
    native = viewer.get(
        f"{instance}/frames/1", HTTP_ACCEPT="multipart/related; type=application/octet-stream"
    )
    assert native.status_code == 406 and "30000 bytes decoded" in reason(native)
    # As stored (its RLE fragments) needs no decoding, and small frames still render.
    stored = viewer.get(
        f"{instance}/frames/1",
        HTTP_ACCEPT='multipart/related; type="image/x-dicom-rle"; transfer-syntax=*',
    )
    assert stored.status_code == 200
    ct = archive.ct[0]
    settings.PORTAL_MAX_DECODED_FRAME_BYTES = 64 * 64 * 2 * 4
    assert (
        viewer.get(f"{archive.path(ct)}/instances/{ct.SOPInstanceUID}/rendered").status_code == 200
    )


def test_one_frame_is_rendered_by_number(archive, viewer):
    rle = archive.rle
    base = f"{archive.path(rle)}/instances/{rle.SOPInstanceUID}/frames"
    frames = [np.asarray(image_of(viewer.get(f"{base}/{n}/rendered"), "png")) for n in (1, 2)]
    assert frames[0].shape == rle.pixel_array[0].shape
    # The two frames differ, and each is its own frame rather than the first twice.
    assert not np.array_equal(frames[0], frames[1])
    assert viewer.get(f"{base}/3/rendered").status_code == 404
    for bad in ("0", "1,2", "x"):
        refused = viewer.get(f"{base}/{bad}/rendered")
        assert refused.status_code == 400 and "numbered from 1" in reason(refused)


def test_pixels_that_cannot_be_decoded_cannot_be_rendered(archive, viewer):
    for ds in (archive.jpeg_lossy,):
        response = viewer.get(f"{archive.path(ds)}/instances/{ds.SOPInstanceUID}/rendered")
        assert response.status_code == 406
        assert "Cannot render" in reason(response)


# -- WADO-URI ---------------------------------------------------------------------------------


def wado_uri(ds: pydicom.Dataset, **extra: str) -> str:
    query = {
        "requestType": "WADO",
        "studyUID": ds.StudyInstanceUID,
        "seriesUID": ds.SeriesInstanceUID,
        "objectUID": ds.SOPInstanceUID,
        **extra,
    }
    return "/dicom-web/wado?" + "&".join(f"{key}={value}" for key, value in query.items())


def test_wado_uri_gives_the_file_or_an_image(alpha, archive, viewer):
    ct = archive.ct[2]
    before = len(retrieve_rows(alpha))
    file = viewer.get(wado_uri(ct, contentType="application/dicom"))
    assert file.status_code == 200 and file.streaming
    assert file["Content-Disposition"] == f'attachment; filename="{ct.SOPInstanceUID}.dcm"'
    assert body_of(file) == archive.files[ct.SOPInstanceUID]
    assert image_of(viewer.get(wado_uri(ct)), "jpeg").size == (128, 128)
    assert image_of(viewer.get(wado_uri(ct, contentType="image/png", rows="64")), "png").size == (
        64,
        64,
    )
    assert len(retrieve_rows(alpha)) == before + 3


@pytest.mark.parametrize(
    ("change", "status", "why"),
    [
        ({"requestType": "WADO-RS"}, 400, "requestType"),
        ({"requestType": ""}, 400, "requestType"),
        ({"objectUID": ""}, 400, "objectUID"),
        ({"studyUID": "1..2"}, 400, "not a valid UID"),
        ({"contentType": "image/gif"}, 406, "not offered"),
        (
            {"contentType": "application/dicom", "transferSyntax": "1.2.840.10008.1.2.4.50"},
            406,
            "transcoded",
        ),
        ({"windowCenter": "40"}, 400, "go together"),
        ({"frameNumber": "0"}, 400, "frameNumber"),
        ({"seriesUID": "1.2.3"}, 404, "has no series"),
    ],
)
def test_wado_uri_refusals(archive, viewer, change, status, why):
    ct = archive.ct[2]
    query = {
        "requestType": "WADO",
        "studyUID": ct.StudyInstanceUID,
        "seriesUID": ct.SeriesInstanceUID,
        "objectUID": ct.SOPInstanceUID,
        **change,
    }
    response = viewer.get("/dicom-web/wado", query)
    assert response.status_code == status
    assert why in reason(response)


# -- who may ----------------------------------------------------------------------------------


def every_url(archive: Archive) -> list[str]:
    ds = archive.rle
    instance = f"{archive.path(ds)}/instances/{ds.SOPInstanceUID}"
    return [
        f"/dicom-web/studies/{ds.StudyInstanceUID}",
        archive.path(ds),
        instance,
        f"{instance}/metadata",
        f"{instance}/frames/1",
        f"{instance}/bulk/7FE00010",
        f"{instance}/rendered",
        f"{archive.path(ds)}/thumbnail",
        wado_uri(ds, contentType="application/dicom"),
    ]


def test_another_tenant_finds_nothing_of_alpha(alpha, beta, archive, make_user):
    admin = make_user(beta, role=Role.ADMIN)
    clients = [
        token_client(beta, make_user, Role.ADMIN),
        logged_in(tenant_client(beta), admin.username),
    ]
    guessed = (
        f"/dicom-web/studies/{generate_uid()}/series/{generate_uid()}/instances/{generate_uid()}"
    )
    pixels = archive.rle.PixelData[:64]
    for client in clients:
        for url in [*every_url(archive), guessed]:
            response = client.get(url)
            assert response.status_code == 404, url
            assert not response.streaming
            assert pixels not in response.content
    with schema_context(beta.schema_name):
        assert not AuditEvent.objects.filter(action=RETRIEVE, outcome="success").exists()
    assert retrieve_rows(alpha) == []


def test_a_token_of_alpha_is_unknown_on_beta(beta, archive, viewer):
    foreign = tenant_client(beta, HTTP_AUTHORIZATION=viewer.defaults["HTTP_AUTHORIZATION"])
    for url in every_url(archive):
        response = foreign.get(url)
        assert response.status_code == 401, url


def test_viewer_may_retrieve_and_auditor_may_not(alpha, archive, make_user):
    viewer = logged_in(tenant_client(alpha), make_user(alpha, role=Role.VIEWER).username)
    auditor = token_client(alpha, make_user, Role.AUDITOR)
    for url in every_url(archive):
        assert viewer.get(url).status_code == 200, url
    granted = len(retrieve_rows(alpha))
    assert granted == len(every_url(archive))
    for url in every_url(archive):
        response = auditor.get(url)
        assert response.status_code == 403, url
        assert not response.streaming
    assert len(retrieve_rows(alpha)) == granted
    anonymous = tenant_client(alpha).get(every_url(archive)[0])
    assert anonymous.status_code == 401
