"""/studies/ in the browser's shoes: search, sort, detail, thumbnails, download, delete, roles,
isolation and escaping of whatever the DICOM files say."""

import io
import zipfile
from datetime import date
from pathlib import Path

import pydicom
import pytest
from django_tenants.utils import schema_context
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from accounts.models import Role
from audit.models import AuditEvent
from portal.pagination import CappedCountPaginator
from studies.ingest import ingest_item_stage, ingest_job_create, ingest_job_submit
from studies.models import Instance, Patient, Series, StorageMedium, Study
from studies.storage import instance_path
from tenants.models import Tenant
from tests.conftest import tenant_client


def dicom(name: str = "CT_small.dcm", **tags: object) -> bytes:
    """A bundled pydicom file with fresh UIDs (unless given) and the tags given replaced."""
    ds = pydicom.dcmread(get_testdata_file(name, download=False))
    tags.setdefault("StudyInstanceUID", generate_uid())
    tags.setdefault("SeriesInstanceUID", generate_uid())
    tags.setdefault("SOPInstanceUID", generate_uid())
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def store(tenant: Tenant, *files: bytes) -> None:
    """Send files through the real ingest pipeline of the tenant, synchronously."""
    with schema_context(tenant.schema_name):
        job = ingest_job_create(source="upload", description="test")
        for index, data in enumerate(files):
            ingest_item_stage(job=job, name=f"{index}.dcm", stream=io.BytesIO(data))
        job = ingest_job_submit(job=job, run_now=True)
        assert job.stored == len(files), list(job.items.values_list("reason", flat=True))


def study_of(tenant: Tenant, uid: str) -> Study | None:
    with schema_context(tenant.schema_name):
        return Study.objects.filter(study_instance_uid=uid).first()


@pytest.fixture
def archive(alpha, beta, storage):
    """Three alpha studies and one beta study, with distinct names, dates and modalities."""
    uids = {key: generate_uid() for key in ("doe", "smith", "mr", "beta")}
    store(
        alpha,
        dicom(
            StudyInstanceUID=uids["doe"],
            PatientName="DOE^JOHN",
            PatientID="P-100",
            AccessionNumber="ACC1",
            StudyDate="20240105",
            StudyDescription="Chest CT",
        ),
        dicom(
            StudyInstanceUID=uids["smith"],
            PatientName="SMITH^ANNA",
            PatientID="P-200",
            AccessionNumber="ACC2",
            StudyDate="20240310",
            StudyDescription="Abdomen",
        ),
        dicom(
            "MR_small.dcm",
            StudyInstanceUID=uids["mr"],
            PatientName="DOE_JANE",
            PatientID="P-300",
            StudyDate="20230701",
            StudyDescription="Brain MR",
        ),
    )
    store(
        beta,
        dicom(
            StudyInstanceUID=uids["beta"],
            PatientName="DOE^BETA",
            PatientID="P-100",
            StudyDate="20240105",
        ),
    )
    return uids


def listed(response) -> list[str]:
    return [s.study_instance_uid for s in response.context["studies"]]


# -- search -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, ["smith", "doe", "mr"]),
        ({"patient_name": "doe*"}, ["doe", "mr"]),
        ({"patient_name": "DOE^J?HN"}, ["doe"]),
        ({"patient_name": "doe"}, ["doe", "mr"]),
        ({"patient_name": "*ANNA"}, ["smith"]),
        # % and _ are literal characters, not SQL wildcards.
        ({"patient_name": "DOE_*"}, ["mr"]),
        ({"patient_name": "%"}, []),
        ({"patient_name": ".*"}, []),
        ({"patient_id": "P-200"}, ["smith"]),
        # DICOM's matching rules, as QIDO-RS applies them: only names ignore case.
        ({"accession_number": "acc1"}, []),
        ({"accession_number": "ACC1"}, ["doe"]),
        ({"date_from": "2024-01-01"}, ["smith", "doe"]),
        ({"date_from": "2024-01-01", "date_to": "2024-02-01"}, ["doe"]),
        ({"modality": "mr"}, ["mr"]),
        ({"description": "hest"}, ["doe"]),
        ({"description": "chest"}, []),
        ({"sort": "patient_name"}, ["doe", "mr", "smith"]),
        ({"sort": "-patient_name"}, ["smith", "mr", "doe"]),
        ({"sort": "study_date"}, ["mr", "doe", "smith"]),
        ({"sort": "-received"}, ["mr", "smith", "doe"]),
        ({"sort": "password; drop table"}, ["smith", "doe", "mr"]),
    ],
)
def test_search_filters_and_sorts_alphas_studies_only(client_as, archive, query, expected):
    response = client_as(Role.VIEWER).get("/studies/", query)
    assert response.status_code == 200
    assert listed(response) == [archive[key] for key in expected]
    assert archive["beta"] not in response.content.decode()


@pytest.mark.parametrize(
    ("page", "qido"),
    [
        ({"patient_name": "doe"}, {"PatientName": "doe*"}),
        ({"patient_name": "*ANNA"}, {"PatientName": "*ANNA"}),
        ({"patient_id": "P-2"}, {"PatientID": "P-2*"}),
        ({"accession_number": "ACC1"}, {"AccessionNumber": "ACC1"}),
        ({"date_from": "2024-01-01", "date_to": "2024-02-01"}, {"StudyDate": "20240101-20240201"}),
        ({"modality": "MR"}, {"ModalitiesInStudy": "MR"}),
        ({"description": "hest"}, {"StudyDescription": "*hest*"}),
    ],
)
def test_the_page_finds_exactly_what_qido_rs_finds(client_as, archive, page, qido):
    client = client_as(Role.VIEWER)
    listed_by_page = set(listed(client.get("/studies/", page)))
    answer = client.get("/dicom-web/studies", qido, HTTP_ACCEPT="application/dicom+json")
    assert answer.status_code == 200, answer.content
    found_by_qido = {study["0020000D"]["Value"][0] for study in answer.json()}
    assert listed_by_page == found_by_qido and listed_by_page


def test_a_reversed_date_range_is_refused_with_its_message(client_as, archive):
    response = client_as(Role.VIEWER).get(
        "/studies/", {"date_from": "2024-03-01", "date_to": "2024-01-01"}
    )
    assert "The end date is before the start date." in response.content.decode()
    assert response.context["form"].errors["date_to"]


def test_sort_headers_toggle_and_keep_the_filters(client_as, archive):
    page = client_as(Role.VIEWER).get("/studies/", {"patient_name": "doe*", "sort": "-study_date"})
    headers = page.context["headers"]
    assert headers["study_date"]["query"] == "patient_name=doe%2A&sort=study_date"
    assert headers["patient_name"]["query"] == "patient_name=doe%2A&sort=-patient_name"
    assert 'aria-sort="descending"' in page.content.decode()


def test_empty_states_say_what_to_do(client_as, alpha, storage):
    client = client_as(Role.ADMIN)
    assert "No studies yet" in client.get("/studies/").content.decode()
    assert "No studies match" in client.get("/studies/?patient_name=X*").content.decode()


def test_the_list_pages_by_fifty_with_a_constant_number_of_queries(
    client_as, alpha, storage, django_assert_max_num_queries
):
    client = client_as(Role.VIEWER)
    store(alpha, dicom(PatientName="FIRST"))
    with django_assert_max_num_queries(12) as few:
        client.get("/studies/")
    with schema_context(alpha.schema_name):
        patient = Patient.objects.get()
        Study.objects.bulk_create(
            Study(study_instance_uid=f"1.2.3.{n}", patient_record=patient, patient_name=f"P{n}")
            for n in range(60)
        )
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = client.get("/studies/?sort=patient_name")
    assert len(response.context["studies"]) == 50
    assert response.context["paginator"].count == 61
    # Past the cap the count stops: "more than N", and the pages go up to there.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CappedCountPaginator, "count_cap", 55)
        capped = client.get("/studies/?page=2")
        assert capped.context["paginator"].count == 56 and capped.context["paginator"].capped
    assert "more than 55 in all" in capped.content.decode()
    assert len(capped.context["studies"]) == 6


def test_a_rejected_search_lists_nothing_and_odd_pages_show_the_nearest(client_as, alpha, storage):
    store(alpha, dicom(PatientName="ONLY^ONE"))
    client = client_as(Role.VIEWER)
    bad = client.get("/studies/", {"date_from": "2030-01-02", "date_to": "2030-01-01"})
    page = bad.content.decode()
    assert bad.status_code == 200 and list(bad.context["studies"]) == []
    assert "The filter was not applied" in page and "ONLY^ONE" not in page
    for number in ("999", "abc", "-1"):
        answer = client.get("/studies/", {"page": number})
        assert answer.status_code == 200, number
        assert "ONLY^ONE" in answer.content.decode(), number


def test_dicom_values_are_escaped_on_list_and_detail(client_as, alpha, storage):
    uid = generate_uid()
    store(
        alpha,
        dicom(
            StudyInstanceUID=uid,
            PatientName="<script>alert(1)</script>",
            StudyDescription='"><img src=x onerror=alert(2)>',
        ),
    )
    client = client_as(Role.VIEWER)
    for url in ("/studies/", f"/studies/{uid}/"):
        page = client.get(url).content.decode()
        assert "<script>alert(1)</script>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "<img src=x" not in page


# -- detail, thumbnails -----------------------------------------------------------------------


def test_the_study_page_shows_series_with_thumbnails_and_is_audited(client_as, alpha, storage):
    uid = generate_uid()
    store(alpha, dicom(StudyInstanceUID=uid, PatientName="DOE^JOHN", SeriesNumber=3))
    client = client_as(Role.VIEWER)
    page = client.get(f"/studies/{uid}/")
    assert page.status_code == 200
    body = page.content.decode()
    series = page.context["series_list"][0]
    assert series.num_instances == 1 and series.media == ["default"]
    thumb = f"/studies/{uid}/series/{series.series_instance_uid}/thumbnail.png"
    assert thumb in body
    png = client.get(thumb)
    assert png.status_code == 200 and png["Content-Type"] == "image/png"
    assert b"".join(png.streaming_content).startswith(b"\x89PNG")
    with schema_context(alpha.schema_name):
        stored = Series.objects.get(pk=series.pk)
        assert stored.thumbnail == f".thumbnails/{series.series_instance_uid}.png"
        assert (Path(alpha.storage_root) / stored.thumbnail).is_file()
        assert AuditEvent.objects.filter(action="study.view", object_type="study").count() == 1


def test_undecodable_pixels_show_a_placeholder_with_the_reason(client_as, alpha, storage):
    uid = generate_uid()
    store(alpha, dicom("JPEG-lossy.dcm", StudyInstanceUID=uid))
    page = client_as(Role.VIEWER).get(f"/studies/{uid}/")
    body = page.content.decode()
    assert "No preview" in body and "cannot be decoded" in body
    with schema_context(alpha.schema_name):
        series = Series.objects.get(study__study_instance_uid=uid)
    assert series.thumbnail == "" and "JPEG Extended" in series.thumbnail_error


@pytest.mark.parametrize(
    "path",
    [
        "{beta}/",
        "{beta}/download.zip",
        "{beta}/delete/",
        "1.2.3.999/",
        "not-a-uid/",
        "1..2/",
        "{long}/",
    ],
)
def test_betas_and_malformed_uids_are_404_in_alpha(client_as, archive, path):
    url = "/studies/" + path.format(beta=archive["beta"], long="1." * 40)
    assert client_as(Role.ADMIN).get(url).status_code == 404


def test_betas_thumbnail_is_not_reachable_from_alpha(client_as, alpha, beta, archive):
    beta_client = client_as(Role.VIEWER, beta)
    page = beta_client.get(f"/studies/{archive['beta']}/")
    series_uid = page.context["series_list"][0].series_instance_uid
    path = f"/studies/{archive['beta']}/series/{series_uid}/thumbnail.png"
    assert beta_client.get(path).status_code == 200
    alpha_client = client_as(Role.ADMIN)
    assert alpha_client.get(path).status_code == 404
    # Even under one of alpha's own studies, beta's series UID does not exist.
    other = f"/studies/{archive['doe']}/series/{series_uid}/thumbnail.png"
    assert alpha_client.get(other).status_code == 404


# -- download ---------------------------------------------------------------------------------


def test_a_viewer_downloads_the_study_as_a_zip_of_its_files(client_as, alpha, storage):
    uid, series_uid = generate_uid(), generate_uid()
    one = {"StudyInstanceUID": uid, "PatientID": "P-ZIP"}  # one patient's study
    files = [dicom(SeriesInstanceUID=series_uid, **one) for _ in range(2)]
    files.append(dicom("MR_small.dcm", **one))
    store(alpha, *files)
    response = client_as(Role.VIEWER).get(f"/studies/{uid}/download.zip")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert response.streaming
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert archive.testzip() is None
    by_uid = {pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID: data for data in files}
    names = archive.namelist()
    assert len(names) == 3
    for name in names:
        data = archive.read(name)
        ds = pydicom.dcmread(io.BytesIO(data))
        assert name == f"{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
        assert data == by_uid[ds.SOPInstanceUID]
    with schema_context(alpha.schema_name):
        event = AuditEvent.objects.get(action="study.download")
        assert event.details["instances"] == 3


def test_ticked_studies_download_as_one_zip_a_folder_each(client_as, alpha, beta, storage):
    first, second, theirs = generate_uid(), generate_uid(), generate_uid()
    store(alpha, dicom(StudyInstanceUID=first), dicom(StudyInstanceUID=first))
    store(alpha, dicom(StudyInstanceUID=second))
    store(beta, dicom(StudyInstanceUID=theirs))
    response = client_as(Role.VIEWER).post(
        "/studies/bulk/", {"action": "download", "uids": [first, second, theirs]}
    )
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"].endswith('-2.zip"')
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    folders = sorted(name.split("/")[0] for name in archive.namelist())
    assert folders == sorted([first, first, second])  # beta's study is not alpha's to give
    for name in archive.namelist():
        ds = pydicom.dcmread(io.BytesIO(archive.read(name)))
        assert name == f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
    with schema_context(alpha.schema_name):
        audited = AuditEvent.objects.filter(action="study.download")
        assert sorted(e.details["instances"] for e in audited) == [1, 2]
    auditor = client_as(Role.AUDITOR)
    assert (
        auditor.post("/studies/bulk/", {"action": "download", "uids": [first]}).status_code == 403
    )


# -- delete -----------------------------------------------------------------------------------


def test_an_operator_deletes_a_study_rows_files_and_thumbnails(
    client_as, alpha, archive, django_capture_on_commit_callbacks
):
    client = client_as(Role.OPERATOR)
    uid = archive["doe"]
    client.get(f"/studies/{uid}/")  # makes the thumbnail
    with schema_context(alpha.schema_name):
        instance = Instance.objects.select_related("medium").get(
            series__study__study_instance_uid=uid
        )
        file, size = instance_path(instance), instance.size_bytes
        series = Series.objects.get(study__study_instance_uid=uid)
        thumbnail = Path(alpha.storage_root) / series.thumbnail
        used_before = StorageMedium.objects.get(name="default").used_bytes
    assert file.is_file() and thumbnail.is_file()
    confirm = client.get(f"/studies/{uid}/delete/")
    assert (
        "1 instance" in confirm.content.decode() and "Delete the study" in confirm.content.decode()
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/studies/{uid}/delete/")
    assert response.status_code == 302 and response["Location"] == "/studies/"
    assert study_of(alpha, uid) is None
    assert not file.exists() and not thumbnail.exists() and not file.parent.exists()
    with schema_context(alpha.schema_name):
        assert not Instance.objects.filter(sop_instance_uid=instance.sop_instance_uid).exists()
        assert not Patient.objects.filter(name="DOE^JOHN").exists()
        assert StorageMedium.objects.get(name="default").used_bytes == used_before - size
        event = AuditEvent.objects.get(action="study.delete")
        assert (event.object_id, event.details["instances"], event.details["bytes"]) == (
            uid,
            1,
            size,
        )
        assert Study.objects.count() == 2
    assert study_of(Tenant.objects.get(slug="beta"), archive["beta"]) is not None


def test_a_viewer_can_neither_see_nor_use_delete(client_as, alpha, archive):
    client = client_as(Role.VIEWER)
    uid = archive["doe"]
    assert "Delete…" not in client.get(f"/studies/{uid}/").content.decode()
    assert client.get(f"/studies/{uid}/delete/").status_code == 403
    assert client.post(f"/studies/{uid}/delete/").status_code == 403
    study = study_of(alpha, uid)
    assert study is not None and study.num_instances == 1
    with schema_context(alpha.schema_name):
        assert instance_path(Instance.objects.get(series__study=study)).is_file()
        assert not AuditEvent.objects.filter(action="study.delete").exists()


def test_anonymous_users_go_to_the_login_page(alpha, archive):
    for url in (f"/studies/{archive['doe']}/", f"/studies/{archive['doe']}/download.zip"):
        response = tenant_client(alpha).get(url)
        assert response.status_code == 302 and "/account/login/" in response["Location"]
    assert study_of(alpha, archive["doe"]) is not None


def test_dates_are_read_from_the_files(alpha, archive):
    assert study_of(alpha, archive["doe"]).study_date == date(2024, 1, 5)  # type: ignore[union-attr]
