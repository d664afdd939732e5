"""A study's series, their instances, and one instance's DICOM header and preview: reached
from the study page, bounded whatever the file holds, audited, and the tenant's own only."""

import io

import pydicom
import pytest
from django_tenants.utils import schema_context
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from accounts.models import Role
from audit.models import AuditEvent
from tests.studies.index.test_study_pages import dicom, store


@pytest.fixture
def stored(alpha, storage):
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.PatientName = "HEADER^SHOWN"
    ds.add_new(0x00110010, "LO", "ACME private")  # a private creator
    ds.add_new(0x00111001, "OB", b"\x01" * 10_240)  # a large private value: not read
    nested = Dataset()
    for _ in range(8):  # deeper than the page follows
        outer = Dataset()
        outer.ReferencedSequence = Sequence([nested])
        nested = outer
    ds.ReferencedImageSequence = Sequence([nested] * 30)  # more items than the page shows
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    store(alpha, out.getvalue())
    return study, series, sop


def test_the_series_page_lists_its_instances_and_links_the_header(client_as, stored):
    study, series, sop = stored
    client = client_as(Role.VIEWER)
    detail = client.get(f"/studies/{study}/").content.decode()
    assert f'href="/studies/{study}/series/{series}/"' in detail
    page = client.get(f"/studies/{study}/series/{series}/").content.decode()
    assert f'href="/studies/{study}/series/{series}/instances/{sop}/"' in page
    assert "128 \N{MULTIPLICATION SIGN} 128" in page  # CT_small's columns and rows


def test_the_header_is_shown_bounded_and_its_opening_audited(client_as, alpha, stored):
    study, series, sop = stored
    response = client_as(Role.VIEWER).get(f"/studies/{study}/series/{series}/instances/{sop}/")
    page = response.content.decode()
    assert response.status_code == 200
    assert "PatientName" in page and "HEADER^SHOWN" in page and "(0010,0010)" in page
    assert "TransferSyntaxUID" in page  # the file meta comes first
    assert "(10,240 bytes, not shown)" in page and "ACME private" in page
    assert "30 items" in page and "… 10 more items" in page
    assert "PixelData" not in page  # the pixels are never read
    assert f"/dicom-web/studies/{study}/series/{series}/instances/{sop}/rendered" in page
    with schema_context(alpha.schema_name):
        event = AuditEvent.objects.filter(action="instance.view_header").latest("id")
    assert event.details["sop_instance_uid"] == sop and event.object_type == "instance"


def test_the_preview_the_page_shows_is_drawn_for_the_session(client_as, stored):
    study, series, sop = stored
    preview = client_as(Role.VIEWER).get(
        f"/dicom-web/studies/{study}/series/{series}/instances/{sop}/rendered",
        HTTP_ACCEPT="image/png",
    )
    assert preview.status_code == 200 and preview["Content-Type"] == "image/png"


def test_other_tenants_and_mismatched_uids_get_404(client_as, alpha, beta, stored):
    study, series, sop = stored
    other_study = generate_uid()
    store(alpha, dicom(StudyInstanceUID=other_study))
    alpha_client, beta_client = client_as(Role.VIEWER), client_as(Role.ADMIN, beta)
    for url in (
        f"/studies/{study}/series/{series}/",
        f"/studies/{study}/series/{series}/instances/{sop}/",
    ):
        assert beta_client.get(url).status_code == 404, url
    # A series or instance reached through another study of the same tenant is not found.
    assert alpha_client.get(f"/studies/{other_study}/series/{series}/").status_code == 404
    assert (
        alpha_client.get(f"/studies/{other_study}/series/{series}/instances/{sop}/").status_code
        == 404
    )
    assert alpha_client.get(f"/studies/{study}/series/{series}/instances/1.2.3/").status_code == 404
