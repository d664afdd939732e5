"""QIDO-RS: matching as PS3.18 defines it, includefield, paging, errors with their reasons,
who may search, one audit row per search, and nothing of another tenant ever answered."""

import datetime
import json
from collections.abc import Callable

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django_tenants.utils import schema_context
from pydicom.uid import generate_uid

from accounts.models import Role, TokenScope
from accounts.services import api_token_create
from audit.models import AuditEvent
from studies.models import Instance, Patient, Series, StorageMedium, Study
from tenants.models import Tenant
from tests.conftest import logged_in, tenant_client

CT = "1.2.840.10008.5.1.4.1.1.2"


def index_study(
    tenant: Tenant,
    *,
    name: str,
    patient_id: str = "P1",
    study_date: datetime.date | None = None,
    accession: str = "",
    modality: str = "CT",
    instances: int = 2,
    description: str = "",
    study_uid: str | None = None,
) -> dict[str, str]:
    """One study with one series straight into the tenant's index (no files needed)."""
    with schema_context(tenant.schema_name):
        medium = StorageMedium.objects.get(name="default")
        patient, _ = Patient.objects.get_or_create(
            patient_id=patient_id, name=name, birth_date=None
        )
        study = Study.objects.create(
            study_instance_uid=study_uid or generate_uid(),
            patient_record=patient,
            patient_name=name,
            patient_id=patient_id,
            patient_sex="O",
            study_date=study_date,
            study_time=datetime.time(10, 30),
            accession_number=accession,
            description=description,
            modalities=[modality],
            num_series=1,
            num_instances=instances,
        )
        series = Series.objects.create(
            series_instance_uid=generate_uid(),
            study=study,
            modality=modality,
            series_number=1,
            description=f"{modality} series",
            num_instances=instances,
        )
        sops = []
        for number in range(1, instances + 1):
            sop = generate_uid()
            Instance.objects.create(
                sop_instance_uid=sop,
                series=series,
                sop_class_uid=CT,
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                instance_number=number,
                rows=512,
                columns=512,
                bits_allocated=16,
                medium=medium,
                relative_path=f"{study.study_instance_uid}/{series.series_instance_uid}/{sop}.dcm",
                size_bytes=1000,
                sha256="0" * 64,
            )
            sops.append(sop)
        return {
            "study": study.study_instance_uid,
            "series": series.series_instance_uid,
            "sop": sops[0],
        }


@pytest.fixture
def archive(alpha, beta) -> dict[str, dict[str, str]]:
    """Four alpha studies and one beta study that would match every alpha query."""
    return {
        "doe": index_study(
            alpha,
            name="DOE^JOHN",
            patient_id="A100",
            study_date=datetime.date(2024, 3, 1),
            accession="ACC1",
            description="CT HEAD",
        ),
        "dole": index_study(
            alpha,
            name="DOLE^JANE",
            patient_id="A200",
            study_date=datetime.date(2024, 6, 15),
            accession="ACC2",
            modality="MR",
        ),
        "smith": index_study(
            alpha,
            name="SMITH^ANNA",
            patient_id="A300",
            study_date=datetime.date(2023, 12, 31),
            accession="ACC3",
        ),
        "percent": index_study(alpha, name="100%_SURE^X", patient_id="A400"),
        "beta_doe": index_study(
            beta,
            name="DOE^JOHN",
            patient_id="A100",
            study_date=datetime.date(2024, 3, 1),
            accession="ACC1",
        ),
    }


@pytest.fixture
def viewer_client(alpha, make_user) -> Callable[..., object]:
    user = make_user(alpha, role=Role.VIEWER)
    return logged_in(tenant_client(alpha), user.username)


def search(client, path: str = "/dicom-web/studies", **params: str):
    return client.get(path, params, HTTP_ACCEPT="application/dicom+json")


def values(response, tag: str) -> list:
    assert response.status_code == 200, response.content
    out = []
    for result in response.json():
        value = result.get(tag, {}).get("Value", [None])[0]
        out.append(value["Alphabetic"] if isinstance(value, dict) else value)
    return out


def study_uids(response) -> set[str]:
    return set(values(response, "0020000D"))


def test_patient_name_wildcards_match_case_insensitively(archive, viewer_client):
    assert study_uids(search(viewer_client, PatientName="DO*")) == {
        archive["doe"]["study"],
        archive["dole"]["study"],
    }
    assert study_uids(search(viewer_client, PatientName="do?^j*")) == {archive["doe"]["study"]}
    assert study_uids(search(viewer_client, PatientName="*ANNA")) == {archive["smith"]["study"]}
    # Exact (no wildcard) means the whole name, and LIKE's own % and _ are plain characters.
    assert study_uids(search(viewer_client, PatientName="DOE")) == set()
    assert study_uids(search(viewer_client, PatientName="doe^john")) == {archive["doe"]["study"]}
    assert study_uids(search(viewer_client, PatientName="100%_*")) == {archive["percent"]["study"]}
    assert study_uids(search(viewer_client, PatientName="1_0*")) == set()


def test_date_ranges_and_accession_and_patient_id(archive, viewer_client):
    assert study_uids(search(viewer_client, StudyDate="20240101-20241231")) == {
        archive["doe"]["study"],
        archive["dole"]["study"],
    }
    assert study_uids(search(viewer_client, StudyDate="-20231231")) == {archive["smith"]["study"]}
    assert study_uids(search(viewer_client, StudyDate="20240615-")) == {archive["dole"]["study"]}
    assert study_uids(search(viewer_client, StudyDate="20240301")) == {archive["doe"]["study"]}
    assert study_uids(search(viewer_client, AccessionNumber="ACC2")) == {archive["dole"]["study"]}
    assert study_uids(search(viewer_client, **{"00100020": "A300"})) == {archive["smith"]["study"]}
    assert study_uids(search(viewer_client, ModalitiesInStudy="MR")) == {archive["dole"]["study"]}


def test_uid_lists_match_any_listed_uid(archive, viewer_client):
    wanted = {archive["doe"]["study"], archive["smith"]["study"]}
    listed = ",".join(sorted(wanted))
    assert study_uids(search(viewer_client, StudyInstanceUID=listed)) == wanted
    assert study_uids(search(viewer_client, StudyInstanceUID=listed.replace(",", "\\"))) == wanted


def test_study_results_carry_the_required_attributes(archive, viewer_client):
    response = search(viewer_client, AccessionNumber="ACC1")
    (result,) = response.json()
    assert response["Content-Type"] == "application/dicom+json"
    assert result["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "DOE^JOHN"}]}
    assert result["00080020"] == {"vr": "DA", "Value": ["20240301"]}
    assert result["00080030"] == {"vr": "TM", "Value": ["103000"]}
    assert result["00080061"] == {"vr": "CS", "Value": ["CT"]}
    assert result["00201206"] == {"vr": "IS", "Value": [1]}
    assert result["00201208"] == {"vr": "IS", "Value": [2]}
    assert result["00080005"]["Value"] == ["ISO_IR 192"]
    assert result["00081190"]["Value"] == [
        f"http://alpha.localhost/dicom-web/studies/{archive['doe']['study']}"
    ]
    # Empty values are present without a Value (PS3.18 F.2.5).
    assert result["00200010"] == {"vr": "SH"}


def test_series_and_instances_below_a_study_and_across_studies(archive, viewer_client):
    doe = archive["doe"]
    series = search(viewer_client, f"/dicom-web/studies/{doe['study']}/series")
    assert values(series, "0020000E") == [doe["series"]]
    assert series.json()[0]["00080060"] == {"vr": "CS", "Value": ["CT"]}
    assert "00100010" not in series.json()[0]  # the URL named the study
    instances = search(
        viewer_client, f"/dicom-web/studies/{doe['study']}/series/{doe['series']}/instances"
    )
    assert values(instances, "00200013") == [1, 2]
    first = instances.json()[0]
    assert first["00080016"]["Value"] == [CT]
    assert first["00280010"]["Value"] == [512] and first["00280100"]["Value"] == [16]
    assert first["00080056"]["Value"] == ["ONLINE"]
    assert first["00081190"]["Value"][0].endswith(
        f"/studies/{doe['study']}/series/{doe['series']}/instances/{doe['sop']}"
    )
    # Across studies, study attributes come along so the client knows where each belongs.
    everywhere = search(viewer_client, "/dicom-web/series", Modality="MR")
    assert values(everywhere, "0020000E") == [archive["dole"]["series"]]
    assert everywhere.json()[0]["00100010"]["Value"] == [{"Alphabetic": "DOLE^JANE"}]
    sops = search(viewer_client, "/dicom-web/instances", SOPInstanceUID=doe["sop"])
    assert values(sops, "0020000D") == [doe["study"]]
    in_study = search(viewer_client, f"/dicom-web/studies/{doe['study']}/instances")
    assert len(in_study.json()) == 2


def test_includefield_all_and_lists(archive, viewer_client):
    plain = search(viewer_client, "/dicom-web/series", AccessionNumber="ACC2")
    assert "00180015" not in plain.json()[0]
    listed = search(
        viewer_client,
        "/dicom-web/series",
        AccessionNumber="ACC2",
        includefield="BodyPartExamined,00081030",
    )
    assert "00180015" in listed.json()[0] and "00081030" in listed.json()[0]
    every = search(viewer_client, "/dicom-web/instances", SOPInstanceUID=archive["doe"]["sop"])
    full = search(
        viewer_client,
        "/dicom-web/instances",
        SOPInstanceUID=archive["doe"]["sop"],
        includefield="all",
    )
    assert set(every.json()[0]) < set(full.json()[0])
    assert "00083002" in full.json()[0]  # AvailableTransferSyntaxUID


def test_attributes_the_index_lacks_are_left_out_with_a_warning(archive, viewer_client):
    response = search(viewer_client, includefield="PatientWeight", AccessionNumber="ACC1")
    assert response.status_code == 200
    assert "00101030" not in response.json()[0]
    assert "PatientWeight" in response["Warning"] and response["Warning"].startswith("299 ")


def test_limit_and_offset_page_through_results(archive, viewer_client):
    pages = [
        values(search(viewer_client, PatientID="A*", limit="2", offset=str(offset)), "0020000D")
        for offset in (0, 2, 4)
    ]
    assert [len(page) for page in pages] == [2, 2, 0]
    alpha_studies = {archive[k]["study"] for k in ("doe", "dole", "smith", "percent")}
    assert set(pages[0] + pages[1]) == alpha_studies


@override_settings(PORTAL_QIDO_MAX_RESULTS=3)
def test_limits_over_the_maximum_are_capped_with_a_warning(archive, viewer_client):
    huge = search(viewer_client, limit="1000000000")
    assert huge.status_code == 200 and len(huge.json()) == 3
    assert "maximum" in huge["Warning"]
    unbounded = search(viewer_client)
    assert len(unbounded.json()) == 3 and "Additional results" in unbounded["Warning"]


def test_fuzzy_matching_is_declined_with_the_standard_warning(archive, viewer_client):
    response = search(viewer_client, PatientName="DOE*", fuzzymatching="true")
    assert response.status_code == 200
    assert "fuzzymatching parameter is not supported" in response["Warning"]
    assert "Warning" not in search(viewer_client, PatientName="DOE*", fuzzymatching="false")


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"StudyDate": "2024-01-01"}, "not a date"),
        ({"StudyDate": "20241345"}, "not a valid date"),
        ({"StudyDate": "-"}, "at least one end"),
        ({"StudyTime": "2599"}, "not a valid time"),
        ({"StudyInstanceUID": "1.2.abc"}, "not a valid UID"),
        ({"colour": "red"}, "Unknown query parameter"),
        ({"PatientWeight": "70"}, "cannot be searched"),
        ({"SOPInstanceUID": "1.2.3"}, "cannot be searched at the study level"),
        ({"00081110.00081150": "1.2"}, "Sequence matching"),
        ({"limit": "-1"}, "must not be negative"),
        ({"limit": "ten"}, "whole number"),
        ({"offset": "1.5"}, "whole number"),
        ({"fuzzymatching": "maybe"}, "true or false"),
        ({"includefield": "NoSuchThing"}, "neither a DICOM keyword"),
        ({"NumberOfStudyRelatedInstances": "2"}, "cannot be used as a matching key"),
    ],
)
def test_bad_requests_are_400_with_their_reason(archive, viewer_client, params, reason):
    response = search(viewer_client, **params)
    assert response.status_code == 400
    assert reason in response.json()["detail"], response.json()


def test_a_parameter_given_twice_is_refused(archive, viewer_client):
    response = viewer_client.get("/dicom-web/studies?PatientID=A100&PatientID=A200")
    assert response.status_code == 400 and "more than once" in response.json()["detail"]


def test_invalid_uid_in_the_path_is_400(viewer_client):
    response = search(viewer_client, "/dicom-web/studies/1..2/series")
    assert response.status_code == 400 and "not a valid UID" in response.json()["detail"]


def test_accept_types_we_do_not_produce_are_406(archive, viewer_client):
    response = viewer_client.get(
        "/dicom-web/studies", HTTP_ACCEPT='multipart/related; type="application/dicom+xml"'
    )
    assert response.status_code == 406 and "application/dicom+json" in response.json()["detail"]
    assert viewer_client.get("/dicom-web/studies", HTTP_ACCEPT="*/*").status_code == 200
    assert (
        viewer_client.get("/dicom-web/studies", HTTP_ACCEPT="application/json").status_code == 200
    )


def test_unsupported_methods_say_what_is_allowed(viewer_client):
    response = viewer_client.delete("/dicom-web/studies")
    assert response.status_code == 405 and "GET" in response["Allow"]


def test_another_tenant_sees_nothing_of_alpha(archive, beta, make_user):
    intruder = make_user(beta, role=Role.ADMIN)
    client = logged_in(tenant_client(beta), intruder.username)
    doe = archive["doe"]
    # Beta's twin study matches the same keys; alpha's studies must never appear.
    assert study_uids(search(client, PatientName="DO*")) == {archive["beta_doe"]["study"]}
    assert study_uids(search(client, StudyInstanceUID=doe["study"])) == set()
    assert search(client, f"/dicom-web/studies/{doe['study']}/series").json() == []
    assert search(client, "/dicom-web/instances", SOPInstanceUID=doe["sop"]).json() == []
    assert (
        search(client, f"/dicom-web/studies/{doe['study']}/series/{doe['series']}/instances").json()
        == []
    )


def test_a_token_of_one_tenant_is_refused_by_another(archive, alpha, beta, make_user):
    user = make_user(alpha, role=Role.ADMIN)
    with schema_context(alpha.schema_name):
        _, raw = api_token_create(user=user, name="viewer", scope=TokenScope.READ)
    own = tenant_client(alpha, HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert len(search(own).json()) == 4
    foreign = tenant_client(beta, HTTP_AUTHORIZATION=f"Bearer {raw}")
    response = search(foreign)
    assert response.status_code == 401 and "Bearer" in response["WWW-Authenticate"]


@pytest.mark.parametrize(
    ("role", "scope", "status"),
    [
        (Role.VIEWER, None, 200),
        (Role.OPERATOR, None, 200),
        (Role.AUDITOR, None, 403),
        (Role.ADMIN, TokenScope.READ, 200),
        (Role.ADMIN, TokenScope.FULL, 200),
        (Role.ADMIN, TokenScope.STORE, 403),
        (Role.AUDITOR, TokenScope.FULL, 403),
    ],
)
def test_who_may_search(archive, alpha, make_user, role, scope, status):
    user = make_user(alpha, role=role)
    if scope is None:
        client = logged_in(tenant_client(alpha), user.username)
    else:
        with schema_context(alpha.schema_name):
            _, raw = api_token_create(user=user, name="t", scope=scope)
        client = tenant_client(alpha, HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert search(client).status_code == status


def test_anonymous_searches_are_401(archive, alpha):
    response = search(tenant_client(alpha))
    assert response.status_code == 401
    assert (
        tenant_client(alpha, HTTP_AUTHORIZATION="Bearer pp_nonsense")
        .get("/dicom-web/studies")
        .status_code
        == 401
    )


def test_each_search_leaves_one_audit_row(archive, alpha, viewer_client):
    with schema_context(alpha.schema_name):
        before = AuditEvent.objects.filter(action="dicomweb.search").count()
    search(viewer_client, PatientName="DO*")
    search(viewer_client, "/dicom-web/instances")
    with schema_context(alpha.schema_name):
        rows = list(AuditEvent.objects.filter(action="dicomweb.search").order_by("-id")[:2])
        assert AuditEvent.objects.filter(action="dicomweb.search").count() == before + 2
    assert rows[1].details["results"] == 2 and "PatientName=DO" in rows[1].details["query"]
    assert rows[0].details["level"] == "IMAGE" and rows[0].details["results"] == 8


def test_search_cost_does_not_grow_with_results(archive, viewer_client):
    def queries(**params: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert search(viewer_client, "/dicom-web/instances", **params).status_code == 200
        return len(captured)

    # Session, user, the search itself and the audit row: nothing per result.
    assert queries(limit="8") == queries(limit="1") <= 10


def test_path_mode_urls_keep_the_tenant_prefix(archive, alpha, make_user):
    user = make_user(alpha, role=Role.VIEWER)
    with override_settings(PORTAL_TENANT_ROUTING="path"):
        client = logged_in(Client(HTTP_HOST="localhost"), user.username, prefix="/t/alpha")
        response = search(client, "/t/alpha/dicom-web/studies", AccessionNumber="ACC1")
        assert response.status_code == 200
        (result,) = response.json()
    assert result["00081190"]["Value"][0] == (
        f"http://localhost/t/alpha/dicom-web/studies/{archive['doe']['study']}"
    )
    assert json.dumps(result).count("alpha") == 1


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"PatientName": "a\x00b"}, "NUL"),
        ({"AccessionNumber": "\x00"}, "NUL"),
        ({"offset": "100000000000000000000"}, "at most"),
        ({"ModalitiesInStudy": "C*"}, "lone *"),
    ],
)
def test_values_the_database_cannot_take_are_400_not_500(archive, viewer_client, params, reason):
    response = search(viewer_client, **params)
    assert response.status_code == 400
    assert reason in response.json()["detail"]


def test_any_modality_matches_every_study(archive, viewer_client):
    assert len(study_uids(search(viewer_client, ModalitiesInStudy="*"))) == 4


def test_the_accept_query_parameter_stands_for_the_header(archive, viewer_client):
    assert (
        viewer_client.get("/dicom-web/studies", {"accept": "application/dicom+json"}).status_code
        == 200
    )
    refused = viewer_client.get("/dicom-web/studies", {"accept": "application/dicom+xml"})
    assert refused.status_code == 406


def test_study_results_say_the_instances_are_online(archive, viewer_client):
    (result,) = search(viewer_client, AccessionNumber="ACC1").json()
    assert result["00080056"] == {"vr": "CS", "Value": ["ONLINE"]}


def test_person_name_component_groups_are_split(alpha, viewer_client):
    index_study(alpha, name="Yamada^Tarou=山田^太郎=やまだ^たろう", patient_id="JP1")
    (result,) = search(viewer_client, PatientID="JP1").json()
    assert result["00100010"]["Value"] == [
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
    ]
