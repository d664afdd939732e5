"""Object storage media against an S3 API over HTTP (moto, through a fault proxy): proven
before use, ingest confirmed before indexing, every read path, delete, usage, verification,
migration both ways, retries, and a second tenant that sees none of it."""

import hashlib
import io
import zipfile
from pathlib import Path

import pydicom
import pytest
from django.core.exceptions import ValidationError
from django_tenants.utils import schema_context
from pydicom.uid import generate_uid

from audit.models import AuditEvent
from dicomnet.queryretrieve import instance_file, read_instance
from portal.sealing import SealBroken, unseal
from studies.index.services import study_delete
from studies.maintenance.services import media_migrate_watermarks, storage_verify
from studies.media import objectstore, services
from studies.models import Instance, MediumKind, StorageMedium, Study
from studies.storage import MeasuredUsage, instance_path
from tests.dicomweb.test_wado import body_of, token_client
from tests.studies.conftest import GIB, audit_actions, media_state
from tests.studies.ingest.test_ingest import bundled, ingest
from tests.studies.media.s3 import ACCESS_KEY, SECRET_KEY, direct_client, keys


def ct_study(count: int, study: str | None = None) -> list[tuple[str, bytes]]:
    """`count` CT instances of one new study (one series), as files to ingest."""
    study, series = study or generate_uid(), generate_uid()
    files = []
    for number in range(count):
        ds = pydicom.dcmread(bundled("CT_small.dcm"))
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = number + 1
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        files.append((f"{number}.dcm", out.getvalue()))
    return files


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def object_bytes(s3, medium: StorageMedium, instance: Instance) -> bytes:
    answer = direct_client(s3.url).get_object(
        Bucket=s3.bucket, Key=medium.key_prefix + instance.relative_path
    )
    return answer["Body"].read()


def files_below(root: str) -> list[Path]:
    return [p for p in Path(root).rglob("*") if p.is_file() and not p.name.startswith(".")]


# -- creating and probing ---------------------------------------------------------------------


def test_a_bucket_is_proven_before_the_medium_is_saved_and_the_secret_is_sealed(
    alpha, s3, add_s3, alpha_admin_client
):
    medium = add_s3("bucket", prefix="archive/ct")
    assert medium.kind == MediumKind.S3
    assert medium.key_prefix.startswith(f"archive/ct/portal-{alpha.schema_name}-")
    assert medium.root == f"s3://{s3.bucket}/{medium.key_prefix}"
    # The probe put, read back and deleted an object: nothing is left in the bucket.
    methods = [method for method, _path, _outcome in s3.proxy.seen]
    assert {"PUT", "GET", "DELETE"} <= set(methods)
    assert keys(s3.url, s3.bucket) == {}
    # The secret is sealed at rest, bound to this medium, and shown nowhere.
    assert SECRET_KEY not in medium.secret_key_sealed
    assert unseal(medium.secret_key_sealed, context=objectstore.seal_context(medium)) == SECRET_KEY
    with pytest.raises(SealBroken):
        unseal(medium.secret_key_sealed, context=f"medium:{medium.pk + 1}:{medium.key_prefix}")
    for url in (
        f"/storage/{medium.pk}/",
        f"/storage/{medium.pk}/edit/",
        f"/api/v1/media/{medium.pk}/",
    ):
        page = alpha_admin_client.get(url).content.decode()
        assert s3.bucket in page and ACCESS_KEY in page and SECRET_KEY not in page, url
    with schema_context(alpha.schema_name):
        details = str(list(AuditEvent.objects.values_list("details", flat=True)))
    assert audit_actions(alpha) == ["medium.create"] and SECRET_KEY not in details

    with schema_context(alpha.schema_name):
        probe = services.medium_probe(tenant=alpha, medium=medium, size_bytes=256 << 10)
    assert probe.ok, probe.message
    assert probe.latency_ms is not None and probe.write_mb_per_s and probe.read_mb_per_s
    assert "put" in probe.message and keys(s3.url, s3.bucket) == {}


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"bucket": "no-such-bucket-here"}, "bucket", "the bucket does not exist"),
        ({"prefix": "a/portal-beta-x"}, "prefix", "portal-"),
        ({"prefix": "a/../b"}, "prefix", "“..”"),
        ({"bucket": "Bad_Name"}, "bucket", "lower-case letters"),
        ({"secret_key": ""}, "secret_key", "Enter the secret access key"),
        ({"access_key_id": "has space"}, "access_key_id", "no spaces"),
        ({"region": "eu west"}, "region", "letters, digits and hyphens"),
    ],
)
def test_a_medium_that_cannot_work_is_refused_and_leaves_nothing(
    alpha, s3, add_s3, overrides, field, message
):
    before = media_state(alpha)
    with pytest.raises(ValidationError) as caught:
        add_s3("bucket", **overrides)
    assert message in caught.value.message_dict[field][0]
    assert media_state(alpha) == before and audit_actions(alpha) == []
    assert keys(s3.url, s3.bucket) == {}


def test_the_endpoint_must_be_listed_when_it_is_internal(alpha, s3, add_s3, settings):
    settings.PORTAL_S3_ALLOWED_ENDPOINTS = []
    s3.proxy.clear()
    with pytest.raises(ValidationError) as caught:
        add_s3("bucket")
    assert "PORTAL_S3_ALLOWED_ENDPOINTS" in caught.value.message_dict["endpoint_url"][0]
    assert s3.proxy.seen == []  # not even one request went out


def test_editing_keeps_the_secret_unless_a_new_one_is_given_and_probes_the_change(
    alpha, s3, add_s3
):
    medium = add_s3("bucket")
    sealed = medium.secret_key_sealed
    with schema_context(alpha.schema_name):
        services.medium_update(tenant=alpha, medium=medium, priority=3, secret_key="")
        medium.refresh_from_db()
        assert medium.secret_key_sealed == sealed and medium.priority == 3
        s3.proxy.clear()
        s3.proxy.add("slowdown", times=50)  # the endpoint refuses everything now
        with pytest.raises(ValidationError):
            services.medium_update(tenant=alpha, medium=medium, secret_key="another-secret")
        medium.refresh_from_db()
        assert medium.secret_key_sealed == sealed
        s3.proxy.clear()
        services.medium_update(tenant=alpha, medium=medium, secret_key="another-secret")
        medium.refresh_from_db()
    assert medium.secret_key_sealed != sealed
    assert unseal(medium.secret_key_sealed, context=objectstore.seal_context(medium)) == (
        "another-secret"
    )


def test_the_storage_page_adds_and_edits_an_object_medium(alpha, s3, storage, alpha_admin_client):
    form = {
        "name": "cold",
        "kind": "s3",
        "root": "",
        "capacity_gib": "2",
        "high_watermark": "90",
        "low_watermark": "80",
        "priority": "0",
        "status": "online",
        "endpoint_url": s3.url,
        "region": "eu-central-1",
        "bucket": s3.bucket,
        "key_prefix": "pacs",
        "addressing_style": "path",
        "access_key_id": ACCESS_KEY,
        "secret_key": SECRET_KEY,
    }
    page = alpha_admin_client.get("/storage/new/").content.decode()
    assert 'data-kind="s3"' in page and 'name="secret_key"' in page
    response = alpha_admin_client.post("/storage/new/", form)
    assert response.status_code == 302, response.context["form"].errors
    with schema_context(alpha.schema_name):
        medium = StorageMedium.objects.get(name="cold")
    assert medium.key_prefix.startswith("pacs/portal-") and medium.region == "eu-central-1"
    # The edit form shows no secret; left empty, the sealed one stays.
    edit = alpha_admin_client.get(f"/storage/{medium.pk}/edit/")
    data = {name: edit.context["form"][name].value() or "" for name in edit.context["form"].fields}
    assert data["secret_key"] == "" and SECRET_KEY not in edit.content.decode()
    data["priority"] = "4"
    assert alpha_admin_client.post(f"/storage/{medium.pk}/edit/", data).status_code == 302
    with schema_context(alpha.schema_name):
        edited = StorageMedium.objects.get(pk=medium.pk)
    assert edited.priority == 4 and edited.secret_key_sealed == medium.secret_key_sealed
    probe = alpha_admin_client.post(f"/storage/{medium.pk}/probe/", HTTP_HX_REQUEST="true")
    assert probe.status_code == 200
    shown = probe.content.decode()
    assert "Put, read back and deleted" in shown and "Round trip" in shown
    assert "Free space" not in shown and "Mounted at" not in shown
    # A bucket that is not there is refused next to its field, and nothing is saved.
    refused = alpha_admin_client.post("/storage/new/", {**form, "name": "x", "bucket": "nope-x"})
    assert refused.status_code == 200 and "bucket does not exist" in refused.content.decode()


# -- ingest and every read --------------------------------------------------------------------


def test_ingest_stores_in_the_bucket_and_every_read_streams_from_it(
    alpha, s3, add_s3, alpha_admin_client, make_user
):
    medium = add_s3("bucket")
    files = ct_study(3)
    study_uid = pydicom.dcmread(io.BytesIO(files[0][1])).StudyInstanceUID
    with schema_context(alpha.schema_name):
        default_before = files_below(StorageMedium.objects.get(name="default").root)
        job = ingest(files)
        assert job.stored == 3, list(job.items.values_list("reason", flat=True))
        rows = list(Instance.objects.select_related("medium").order_by("pk"))
        default_after = files_below(StorageMedium.objects.get(name="default").root)
    assert {row.medium_id for row in rows} == {medium.pk}
    assert default_after == default_before  # nothing went to the disk medium
    stored = keys(s3.url, s3.bucket, medium.key_prefix)
    assert stored == {medium.key_prefix + row.relative_path: row.size_bytes for row in rows}
    sent = {sha(data) for _name, data in files}
    assert {sha(object_bytes(s3, medium, row)) for row in rows} == sent == {r.sha256 for r in rows}
    head = direct_client(s3.url).head_object(
        Bucket=s3.bucket, Key=medium.key_prefix + rows[0].relative_path
    )
    assert head["Metadata"]["sha256"] == rows[0].sha256

    viewer = token_client(alpha, make_user)
    whole = viewer.get(
        f"/dicom-web/studies/{study_uid}",
        HTTP_ACCEPT='multipart/related; type="application/dicom"',
    )
    assert whole.status_code == 200 and whole.streaming
    body = body_of(whole)
    assert all(data in body for _name, data in files)
    metadata = viewer.get(f"/dicom-web/studies/{study_uid}/metadata")
    assert metadata.status_code == 200 and len(metadata.json()) == 3
    zipped = alpha_admin_client.get(f"/studies/{study_uid}/download.zip")
    assert zipped.status_code == 200
    with zipfile.ZipFile(io.BytesIO(body_of(zipped))) as archive:
        inside = [archive.read(name) for name in archive.namelist() if name.endswith(".dcm")]
    assert {sha(data) for data in inside} == sent

    # C-MOVE and C-GET read what they send as pynetdicom asks for it, outside the schema.
    with schema_context(alpha.schema_name):
        to_send = [instance_file(row) for row in rows]
    assert [read_instance(f).SOPInstanceUID for f in to_send] == [r.sop_instance_uid for r in rows]

    # A changed object is never served as the indexed instance.
    with schema_context(alpha.schema_name):
        objectstore.cache_drop(rows[0])
    data = bytearray(object_bytes(s3, medium, rows[0]))
    data[-1] ^= 0xFF
    direct_client(s3.url).put_object(
        Bucket=s3.bucket, Key=medium.key_prefix + rows[0].relative_path, Body=bytes(data)
    )
    with schema_context(alpha.schema_name), pytest.raises(OSError, match="does not match"):
        instance_path(rows[0])


def test_deleting_a_study_removes_its_objects_and_usage_is_measured_by_listing(
    alpha, s3, add_s3, django_capture_on_commit_callbacks
):
    medium = add_s3("bucket")
    with schema_context(alpha.schema_name):
        ingest(ct_study(2) + ct_study(1))
        sizes = list(Instance.objects.values_list("size_bytes", flat=True))
        assert services.medium_usage_now(medium) == MeasuredUsage(bytes=sum(sizes), files=3)
        measured = dict(services.media_measure_usage())
        medium.refresh_from_db()
        assert (medium.used_bytes, medium.file_count) == (sum(sizes), 3)
        assert any(m.pk == medium.pk for m in measured)
        first = Study.objects.order_by("pk").first()
        with django_capture_on_commit_callbacks(execute=True):
            study_delete(study=first)
        left = list(Instance.objects.all())
    assert set(keys(s3.url, s3.bucket, medium.key_prefix)) == {
        medium.key_prefix + row.relative_path for row in left
    }
    assert len(left) == 1


def test_verification_finds_missing_changed_truncated_and_orphan_objects(alpha, s3, add_s3):
    medium = add_s3("bucket")
    client = direct_client(s3.url)
    with schema_context(alpha.schema_name):
        ingest(ct_study(4))
        gone, truncated, changed, _intact = Instance.objects.order_by("pk")
    key = lambda row: medium.key_prefix + row.relative_path  # noqa: E731
    client.delete_object(Bucket=s3.bucket, Key=key(gone))
    client.put_object(
        Bucket=s3.bucket, Key=key(truncated), Body=object_bytes(s3, medium, truncated)[:-10]
    )
    data = bytearray(object_bytes(s3, medium, changed))
    data[-1] ^= 0xFF
    client.put_object(Bucket=s3.bucket, Key=key(changed), Body=bytes(data))
    client.put_object(Bucket=s3.bucket, Key=medium.key_prefix + "stray/orphan.dcm", Body=b"x")

    with schema_context(alpha.schema_name):
        report = storage_verify()

    assert (report["checked"], report["missing"], report["size_mismatch"]) == (4, 1, 1)
    assert (report["checksum_mismatch"], report["orphans"]) == (1, 1)
    problems = {(d["problem"], d["path"]) for d in report["details"]}
    assert problems == {
        ("missing", gone.relative_path),
        ("size_mismatch", truncated.relative_path),
        ("checksum_mismatch", changed.relative_path),
        ("orphans", "stray/orphan.dcm"),
    }


def test_watermark_migration_moves_studies_to_the_bucket_and_back_verified(alpha, s3, add_s3):
    with schema_context(alpha.schema_name):
        ingest(ct_study(2) + ct_study(2))  # on the default disk: no bucket yet
        default = StorageMedium.objects.get(name="default")
        rows = {r.pk: (r.sha256, instance_path(r)) for r in Instance.objects.all()}
    bucket = add_s3("bucket", priority=-1)
    with schema_context(alpha.schema_name):
        default.refresh_from_db()
        StorageMedium.objects.filter(pk=default.pk).update(
            capacity_bytes=default.used_bytes, low_watermark=10
        )
        counts = media_migrate_watermarks()
        assert counts["moved"] == 4, counts
        moved = list(Instance.objects.select_related("medium"))
        assert {row.medium_id for row in moved} == {bucket.pk}
        for row in moved:
            assert sha(object_bytes(s3, bucket, row)) == rows[row.pk][0]
            assert not rows[row.pk][1].exists()  # the disk copy is gone
        bucket.refresh_from_db()
        assert bucket.used_bytes == sum(row.size_bytes for row in moved)

        # Back to a disk: the bucket is the one above its mark now.
        StorageMedium.objects.filter(pk=default.pk).update(capacity_bytes=4 * GIB)
        StorageMedium.objects.filter(pk=bucket.pk).update(
            capacity_bytes=bucket.used_bytes, low_watermark=10
        )
        assert media_migrate_watermarks()["moved"] == 4
        back = list(Instance.objects.select_related("medium"))
        assert {row.medium_id for row in back} == {default.pk}
        assert all(
            hashlib.sha256(instance_path(r).read_bytes()).hexdigest() == r.sha256 for r in back
        )
    assert keys(s3.url, s3.bucket, bucket.key_prefix) == {}


# -- failures ---------------------------------------------------------------------------------


def test_slowdowns_and_dropped_connections_are_retried(alpha, s3, add_s3):
    medium = add_s3("bucket")
    s3.proxy.clear()
    s3.proxy.add("slowdown", lambda method, path: method == "PUT", times=2)
    s3.proxy.add("drop", lambda method, path: method == "PUT", times=1)
    with schema_context(alpha.schema_name):
        job = ingest(ct_study(1))
        row = Instance.objects.select_related("medium").get()
    assert job.stored == 1 and row.medium_id == medium.pk
    outcomes = [outcome for method, _path, outcome in s3.proxy.seen if method == "PUT"]
    assert outcomes == ["slowdown", "slowdown", "drop", "forwarded"]
    assert sha(object_bytes(s3, medium, row)) == row.sha256

    # A read cut off midway is retried too.
    s3.proxy.clear()
    s3.proxy.add("drop", lambda method, path: method == "GET", times=1)
    with schema_context(alpha.schema_name):
        objectstore.cache_drop(row)
        assert hashlib.sha256(instance_path(row).read_bytes()).hexdigest() == row.sha256


def test_a_bucket_that_keeps_failing_leaves_no_row_and_ingest_goes_to_the_disk(alpha, s3, add_s3):
    medium = add_s3("bucket")
    s3.proxy.clear()
    s3.proxy.add("slowdown", lambda method, path: method == "PUT", times=1000)
    with schema_context(alpha.schema_name):
        job = ingest(ct_study(2))
        rows = list(Instance.objects.select_related("medium"))
    assert job.stored == 2
    assert {row.medium.name for row in rows} == {"default"}
    assert keys(s3.url, s3.bucket, medium.key_prefix) == {}


# -- isolation --------------------------------------------------------------------------------


def test_a_second_tenant_on_the_same_bucket_sees_none_of_the_first_ones_objects(
    alpha, beta, s3, add_s3, client_as
):
    mine = add_s3("bucket")
    theirs = add_s3("bucket", tenant=beta)
    assert not theirs.key_prefix.startswith(mine.key_prefix)
    assert not mine.key_prefix.startswith(theirs.key_prefix)
    with schema_context(alpha.schema_name):
        ingest(ct_study(2))
    with schema_context(beta.schema_name):
        assert services.medium_usage_now(theirs) == MeasuredUsage(bytes=0, files=0)
        report = storage_verify()
        assert report["orphans"] == 0 and report["checked"] == 0
        assert not StorageMedium.objects.filter(key_prefix=mine.key_prefix).exists()
    # A sealed secret copied into the other tenant's row does not open there.
    with schema_context(beta.schema_name):
        StorageMedium.objects.filter(pk=theirs.pk).update(secret_key_sealed=mine.secret_key_sealed)
        theirs.refresh_from_db()
        with pytest.raises(objectstore.ObjectStoreError):
            objectstore.ObjectStore(theirs)
    # Row ids are per schema, so alpha's id may name one of beta's media: never alpha's.
    beta_admin = client_as("admin", tenant=beta)
    for url in ("/storage/", f"/storage/{mine.pk}/", "/api/v1/media/", f"/api/v1/media/{mine.pk}/"):
        response = beta_admin.get(url)
        assert response.status_code in (200, 404), url
        assert mine.key_prefix not in response.content.decode(), url
