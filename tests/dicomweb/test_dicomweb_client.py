"""dicomweb-client, a real DICOMweb client, against the portal running as its own server.

Two committed tenants; one stores real files by STOW-RS and reads them back by QIDO-RS and
WADO-RS (instances, metadata with bulk data, frames, rendered). What comes back must equal
what is on disk and what was sent; the other tenant, with the same requests, gets nothing.
The server runs in path mode (`/t/<slug>/dicom-web`): `*.localhost` does not resolve for
Python clients here, and path mode also proves every URL the server hands out keeps the
tenant's prefix.
"""

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient
from django_tenants.utils import schema_context
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from accounts.models import User
from accounts.services import api_token_create
from studies.models import Instance
from studies.storage import instance_path
from tenants.models import Tenant
from tests.browser.conftest import (  # noqa: F401 - fixtures
    LiveServer,
    committed_tenant,
    live_portal,
    public_schema,
    purge_tenants_after,
)

pytestmark = pytest.mark.live


@dataclass(frozen=True)
class Site:
    slug: str
    token: str
    client: DICOMwebClient


@pytest.fixture
def portal(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> LiveServer:
    monkeypatch.setenv("PORTAL_TENANT_ROUTING", "path")
    return request.getfixturevalue("live_portal")


def client_of(portal: LiveServer, slug: str, token: str) -> DICOMwebClient:
    client = DICOMwebClient(
        url=f"{portal.url}/t/{slug}/dicom-web", headers={"Authorization": f"Bearer {token}"}
    )
    # dicomweb-client sends `Host` without the port (0.61), so URLs the server builds from
    # it (BulkDataURI, RetrieveURL) would lose the port; a real deployment is on 443.
    client.host = f"localhost:{portal.port}"
    return client


@pytest.fixture
def sites(portal, committed_tenant, django_db_blocker) -> Iterator[tuple[Site, Site]]:  # noqa: F811
    made = []
    for prefix in ("web-a", "web-b"):
        slug = committed_tenant(prefix, prefix.upper())
        with public_schema(django_db_blocker):
            tenant = Tenant.objects.get(slug=slug)
            with schema_context(tenant.schema_name):
                _, raw = api_token_create(user=User.objects.get(username="admin"), name="client")
        made.append(Site(slug=slug, token=raw, client=client_of(portal, slug, raw)))
    yield made[0], made[1]


def fresh(name: str) -> pydicom.Dataset:
    """A bundled pydicom file as a new instance of one shared study."""
    dataset = pydicom.dcmread(get_testdata_file(name, download=False))
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    return dataset


@pytest.fixture
def stored(sites, django_db_blocker):
    """Three instances stored in site A by STOW-RS; the study UID they now share."""
    a, _ = sites
    study_uid = generate_uid()
    datasets = [fresh("CT_small.dcm"), fresh("MR_small.dcm"), fresh("SC_rgb_rle_2frame.dcm")]
    for dataset in datasets:
        dataset.StudyInstanceUID = study_uid
        dataset.PatientID = "WEB-1"  # one patient's study, whichever file it started from
    response = a.client.store_instances(datasets)
    referenced = response.get("ReferencedSOPSequence", [])
    assert len(referenced) == 3, response
    assert "FailedSOPSequence" not in response or not response.FailedSOPSequence
    return study_uid, {d.SOPInstanceUID: d for d in datasets}


def files_on_disk(slug: str, django_db_blocker) -> dict[str, bytes]:
    with public_schema(django_db_blocker):
        tenant = Tenant.objects.get(slug=slug)
        with schema_context(tenant.schema_name):
            return {
                i.sop_instance_uid: instance_path(i).read_bytes()
                for i in Instance.objects.select_related("medium")
            }


def test_search_finds_what_was_stored(sites, stored):
    a, _ = sites
    study_uid, datasets = stored
    studies = a.client.search_for_studies(search_filters={"StudyInstanceUID": study_uid})
    assert len(studies) == 1
    assert studies[0]["00201208"]["Value"] == [3]
    series = a.client.search_for_series(study_uid)
    assert {s["0020000E"]["Value"][0] for s in series} == {
        d.SeriesInstanceUID for d in datasets.values()
    }
    instances = a.client.search_for_instances(study_uid, fields=["all"])
    assert {i["00080018"]["Value"][0] for i in instances} == set(datasets)
    # The study's patient is the first instance's (CT_small's): found by a name prefix.
    name = str(next(d.PatientName for d in datasets.values() if d.Modality == "CT"))
    wildcard = a.client.search_for_studies(search_filters={"PatientName": name[:3] + "*"})
    assert study_uid in {s["0020000D"]["Value"][0] for s in wildcard}


def test_retrieved_instances_equal_the_stored_files(sites, stored, django_db_blocker):
    a, _ = sites
    study_uid, datasets = stored
    on_disk = files_on_disk(a.slug, django_db_blocker)
    retrieved = a.client.retrieve_study(study_uid)
    assert {d.SOPInstanceUID for d in retrieved} == set(datasets)
    for dataset in retrieved:
        sent = datasets[dataset.SOPInstanceUID]
        assert dataset.PixelData == sent.PixelData
        assert dataset.PatientName == sent.PatientName
        # The client parsed what the server streamed; it is what the file on disk holds.
        assert pydicom.dcmread(io.BytesIO(on_disk[dataset.SOPInstanceUID])) == dataset
    one = next(iter(datasets.values()))
    (instance,) = [a.client.retrieve_instance(study_uid, one.SeriesInstanceUID, one.SOPInstanceUID)]
    assert instance.SOPInstanceUID == one.SOPInstanceUID


def test_series_retrieval_streams_the_exact_bytes(portal, sites, stored, django_db_blocker):
    a, _ = sites
    study_uid, datasets = stored
    ct = next(d for d in datasets.values() if d.Modality == "CT")
    on_disk = files_on_disk(a.slug, django_db_blocker)
    url = f"{portal.url}/t/{a.slug}/dicom-web/studies/{study_uid}/series/{ct.SeriesInstanceUID}"
    response = requests.get(
        url,
        headers={
            "Authorization": f"Bearer {a.token}",
            "Accept": 'multipart/related; type="application/dicom"',
        },
        timeout=20,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("multipart/related")
    # The part's body is the file, byte for byte.
    boundary = response.headers["Content-Type"].split("boundary=")[1].split(";")[0].strip('"')
    parts = response.content.split(b"--" + boundary.encode())[1:-1]
    (body,) = [part.split(b"\r\n\r\n", 1)[1][:-2] for part in parts]
    assert hashlib.sha256(body).digest() == hashlib.sha256(on_disk[ct.SOPInstanceUID]).digest()


def test_metadata_frames_bulk_data_and_rendered(sites, stored):
    a, _ = sites
    study_uid, datasets = stored
    rle = next(d for d in datasets.values() if d.get("NumberOfFrames") == 2)
    ids = (study_uid, rle.SeriesInstanceUID, rle.SOPInstanceUID)
    metadata = a.client.retrieve_instance_metadata(*ids)
    assert metadata["00080018"]["Value"] == [rle.SOPInstanceUID]
    pixel_uri = metadata["7FE00010"]["BulkDataURI"]
    assert f"/t/{a.slug}/dicom-web/" in pixel_uri
    frames = a.client.retrieve_instance_frames(*ids, frame_numbers=[1, 2])
    expected = rle.pixel_array
    assert [len(f) for f in frames] == [expected[0].nbytes, expected[1].nbytes]
    for frame, pixels in zip(frames, expected, strict=True):
        decoded = np.frombuffer(frame, dtype=pixels.dtype).reshape(pixels.shape)
        assert np.array_equal(decoded, pixels)
    second = a.client.retrieve_instance_frames_rendered(
        *ids, frame_numbers=[2], media_types=("image/png",)
    )
    assert np.asarray(Image.open(io.BytesIO(second)).convert("RGB")).shape == expected[1].shape
    ct = next(d for d in datasets.values() if d.Modality == "CT")
    ct_ids = (study_uid, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    ct_metadata = a.client.retrieve_instance_metadata(*ct_ids)
    (bulk,) = a.client.retrieve_bulkdata(ct_metadata["7FE00010"]["BulkDataURI"])
    assert bulk == ct.PixelData
    png = a.client.retrieve_instance_rendered(*ct_ids, media_types=("image/png",))
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (ct.Columns, ct.Rows)
    series_metadata = a.client.retrieve_series_metadata(study_uid, ct.SeriesInstanceUID)
    assert [m["00080018"]["Value"][0] for m in series_metadata] == [ct.SOPInstanceUID]


def test_the_other_tenant_gets_nothing(portal, sites, stored):
    a, b = sites
    study_uid, datasets = stored
    one = next(iter(datasets.values()))
    assert b.client.search_for_studies(search_filters={"StudyInstanceUID": study_uid}) == []
    assert (
        b.client.search_for_instances(search_filters={"SOPInstanceUID": one.SOPInstanceUID}) == []
    )
    with pytest.raises(requests.HTTPError) as refused:
        b.client.retrieve_instance(study_uid, one.SeriesInstanceUID, one.SOPInstanceUID)
    assert refused.value.response.status_code == 404
    with pytest.raises(requests.HTTPError) as refused:
        b.client.retrieve_study_metadata(study_uid)
    assert refused.value.response.status_code == 404
    # A's token, sent to B's service, is unknown there.
    a_token_at_b = client_of(portal, b.slug, a.token)
    with pytest.raises(requests.HTTPError) as refused:
        a_token_at_b.search_for_studies()
    assert refused.value.response.status_code == 401


def test_the_same_file_in_two_tenants_is_two_copies(sites, stored, django_db_blocker):
    a, b = sites
    study_uid, datasets = stored
    one = next(iter(datasets.values()))
    b.client.store_instances([one])
    assert len(b.client.search_for_studies(search_filters={"StudyInstanceUID": study_uid})) == 1
    a_files, b_files = (files_on_disk(s.slug, django_db_blocker) for s in (a, b))
    assert set(b_files) == {one.SOPInstanceUID} and len(a_files) == 3
    with public_schema(django_db_blocker):
        roots = {s.slug: Path(Tenant.objects.get(slug=s.slug).storage_root) for s in (a, b)}
        with schema_context(Tenant.objects.get(slug=b.slug).schema_name):
            b_path = instance_path(Instance.objects.select_related("medium").get())
    assert b_path.is_relative_to(roots[b.slug]) and not b_path.is_relative_to(roots[a.slug])
