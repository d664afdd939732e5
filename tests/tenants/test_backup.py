"""Back up one tenant and restore it as another: `tenants/backup.py` and `manage.py tenant
export|import|verify`, on committed tenants with real DICOM files.

The source tenant is made once for the module (ingested files, a quarantined file, a
thumbnail, a second user with a session, a remote node, a settings change), exported once
and imported once; tests that must import again use their own copies of the export. Every
tenant made here is deleted and purged afterwards.
"""

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django_tenants.utils import schema_context, schema_exists, tenant_context

from accounts.models import Role, User
from accounts.services import user_create
from audit.models import AuditEvent
from configuration.models import RemoteNode, SettingChange, TenantSettings
from configuration.services import node_create, settings_update
from studies.index.services import series_thumbnail_make
from studies.ingest import ingest_items_process
from studies.maintenance.services import ingest_job_retry
from studies.models import (
    IngestItem,
    IngestJob,
    IngestJobStatus,
    Instance,
    ItemOutcome,
    Patient,
    Series,
    StorageMedium,
    Study,
)
from studies.storage import instance_path
from tenants import backup
from tenants.backup import BackupError, Manifest, manifest_verify, tenant_export, tenant_import
from tenants.models import Tenant, TenantEvent
from tenants.services import tenant_create, tenant_delete, tenant_purge
from tests.conftest import autocommitting, owner_role, test_database_url
from tests.studies.ingest.test_ingest import distinct_instances, ingest

PASSWORD = "a-long-and-unguessable-password-42"
FILES = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm"]
TAG = uuid.uuid4().hex[:6]


@dataclass(frozen=True)
class Setup:
    source: Tenant
    copy: Tenant
    export_dir: Path
    manifest: Manifest
    session_cookie: str  # the source user's session, opened before the export
    source_rows: dict[str, list[dict[str, Any]]]  # the index as it was at the export


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rows(schema: str, model: Any, *, exclude: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    with schema_context(schema):
        return [
            {k: v for k, v in row.items() if k not in exclude}
            for row in model.objects.order_by("pk").values()
        ]


def index_rows(schema: str) -> dict[str, list[dict[str, Any]]]:
    return {
        "patient": rows(schema, Patient),
        "study": rows(schema, Study),
        "series": rows(schema, Series),
        "instance": rows(schema, Instance),
        "user": rows(schema, User, exclude=("last_login",)),
        "node": rows(schema, RemoteNode),
        "settings": rows(schema, TenantSettings),
        "settingchange": rows(schema, SettingChange),
        "item": rows(schema, IngestItem, exclude=("staged_path", "quarantine_path")),
    }


def tree(root: Path) -> dict[str, str]:
    """Every file below `root` with its SHA-256."""
    return {p.relative_to(root).as_posix(): sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


def purge(slug: str) -> None:
    connection.set_schema_to_public()
    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is None:
        return
    if tenant.status == "suspended":
        tenant.status = "active"
        tenant.save(update_fields=["status"])
    tenant = tenant_delete(tenant=tenant, actor="tests", confirm_slug=tenant.slug)
    tenant_purge(tenant=tenant)


def nothing_created(slug: str) -> None:
    connection.set_schema_to_public()
    assert not Tenant.all_objects.filter(slug=slug).exists()
    assert not schema_exists(f"t_{slug.replace('-', '_')}")
    assert not (Path(settings.PORTAL_STORAGE_ROOT) / slug).exists()
    assert not list(Path(settings.PORTAL_STORAGE_ROOT).glob(f".import-{slug}-*"))


def login(tenant: Tenant, username: str, password: str = PASSWORD) -> Client:
    client = Client(HTTP_HOST=f"{tenant.slug}.localhost")
    response = client.post("/account/login/", {"username": username, "password": password})
    assert response.status_code == 302, response.content.decode()[:1000]
    return client


@pytest.fixture(scope="module")
def committed(django_db_setup, django_db_blocker) -> Iterator[None]:
    with autocommitting(django_db_blocker), pytest.MonkeyPatch.context() as patch:
        # Thumbnails are made below, synchronously; no task goes to a broker nobody reads.
        patch.setattr(
            "studies.index.services.thumbnail_queue_for_new_series", lambda series_ids: None
        )
        yield


@pytest.fixture(scope="module")
def made(committed) -> Iterator[list[str]]:
    """Slugs of the tenants this module makes; all are purged at the end."""
    slugs: list[str] = []
    try:
        yield slugs
    finally:
        for slug in slugs:
            purge(slug)


def _fill(source: Tenant) -> None:
    with schema_context(source.schema_name):
        admin = User.objects.get(username="admin")
        job = ingest([*distinct_instances(FILES), ("junk.dcm", b"not a DICOM file" * 20)])
        assert (job.stored, job.rejected) == (len(FILES), 1)
        series_thumbnail_make(series_id=Series.objects.earliest("pk").pk)
        user_create(username="dr-who", email="who@example.org", role=Role.VIEWER, password=PASSWORD)
        node_create(actor=admin, ae_title="WORKSTATION1", host="10.1.2.3", port=104)
        settings_update(tenant=source, actor=admin, accent_colour="#123456")


@pytest.fixture(scope="module")
def setup(made, tmp_path_factory) -> Setup:
    source_slug, copy_slug = f"bk-src-{TAG}", f"bk-copy-{TAG}"
    made.extend([source_slug, copy_slug])
    source = tenant_create(
        slug=source_slug,
        name="Backup Source Hospital",
        admin_email="admin@source.example",
        ae_title=f"BKSRC{TAG.upper()}",
        quota_users=7,
        created_by="tests",
    ).tenant
    _fill(source)
    client = login(source, "dr-who")
    session_cookie = client.cookies[f"{settings.SESSION_COOKIE_NAME}_{source.slug}"].value
    source_rows = index_rows(source.schema_name)
    export_dir = tmp_path_factory.mktemp("export") / "acme-backup"
    manifest = tenant_export(tenant=source, target=export_dir, actor="tests")
    copy = tenant_import(source=export_dir, slug=copy_slug, actor="tests")
    connection.set_schema_to_public()
    return Setup(
        source=Tenant.objects.get(pk=source.pk),
        copy=Tenant.objects.get(pk=copy.pk),
        export_dir=export_dir,
        manifest=manifest,
        session_cookie=session_cookie,
        source_rows=source_rows,
    )


@pytest.fixture
def export_copy(setup, tmp_path) -> Path:
    """A copy of the export to spoil."""
    target = tmp_path / "export"
    shutil.copytree(setup.export_dir, target)
    return target


# -- the round trip ----------------------------------------------------------------------------


def test_round_trip_gives_identical_index_users_nodes_and_settings_ids_included(setup):
    copied = index_rows(setup.copy.schema_name)
    assert copied == setup.source_rows
    assert len(copied["instance"]) == len(FILES)
    assert {r["username"] for r in copied["user"]} == {"admin", "dr-who"}
    assert copied["node"][0]["ae_title"] == "WORKSTATION1"
    assert copied["settings"][0]["accent_colour"] == "#123456"
    assert copied["settingchange"], "the versioned settings history came along"


def test_files_come_along_with_their_checksums_and_media_point_into_the_new_root(setup):
    source_root, copy_root = Path(setup.source.storage_root), Path(setup.copy.storage_root)
    assert copy_root != source_root
    source_files = tree(source_root)
    assert tree(copy_root) == source_files
    assert any(p.startswith(".quarantine/") for p in source_files)
    assert any(p.startswith(".thumbnails/") for p in source_files)
    with schema_context(setup.copy.schema_name):
        for medium in StorageMedium.objects.all():
            assert Path(medium.root).is_relative_to(copy_root), medium.root
        for instance in Instance.objects.select_related("medium"):
            path = instance_path(instance)
            assert path.is_relative_to(copy_root)
            assert sha(path) == instance.sha256
            assert path.stat().st_size == instance.size_bytes
        rejected = IngestItem.objects.get(outcome=ItemOutcome.REJECTED)
        assert Path(rejected.quarantine_path).is_relative_to(copy_root)
        assert Path(rejected.quarantine_path).is_file()


def test_manifest_holds_the_facts_counts_and_checksums(setup):
    data = json.loads((setup.export_dir / "manifest.json").read_text())
    assert data["format_version"] == backup.FORMAT_VERSION
    assert data["portal_version"] and data["created_at"]
    assert data["source"]["slug"] == setup.source.slug
    assert data["source"]["schema"] == setup.source.schema_name
    assert data["source"]["ae_title"] == setup.source.ae_title
    assert data["source"]["quota_users"] == 7
    assert data["source"]["domains"] == [
        {"domain": f"{setup.source.slug}.localhost", "is_primary": True}
    ]
    assert ["studies", "0001_initial"] in data["migrations"]
    tables = {t["name"]: t for t in data["tables"]}
    assert tables["studies_instance"]["rows"] == len(FILES)
    assert tables["accounts_user"]["rows"] == 2
    assert "django_session" not in tables and "django_migrations" not in tables
    assert not any(name.startswith("axes_") for name in tables)
    assert {"django_session", "axes_accessattempt"} <= set(data["skipped_tables"])
    for entry in data["files"]:
        assert sha(setup.export_dir / "files" / entry["path"]) == entry["sha256"]
    for table in data["tables"]:
        assert sha(setup.export_dir / table["file"]) == table["sha256"]
    assert data["total_bytes"] == sum(f["size"] for f in data["files"]) + sum(
        t["size"] for t in data["tables"]
    )
    assert data["problems"] == []
    assert manifest_verify(setup.export_dir).rows == setup.manifest.rows


def test_the_copy_is_a_tenant_of_its_own_with_a_new_ae_title_quotas_and_history(setup):
    copy, source = setup.copy, setup.source
    assert copy.status == "active"
    assert copy.ae_title == copy.slug.upper()[:16] != source.ae_title
    assert (copy.name, copy.quota_users, copy.quota_bytes) == (
        source.name,
        source.quota_users,
        source.quota_bytes,
    )
    assert [e.action for e in TenantEvent.objects.filter(tenant=copy).order_by("at", "id")] == [
        "create",
        "activate",
        "import",
    ]
    with schema_context(copy.schema_name):
        audit = list(AuditEvent.objects.order_by("id"))
    assert audit[-1].action == "tenant.import"
    assert audit[-1].details["source_slug"] == source.slug
    with schema_context(source.schema_name):
        source_audit = list(AuditEvent.objects.exclude(action="tenant.export").order_by("id"))
    # The source's audit log up to the export, then the import: nothing of provisioning's.
    assert [(a.id, a.action) for a in audit[:-1]] == [(a.id, a.action) for a in source_audit]


def test_the_copys_audit_log_is_append_only_again(setup):
    from django.db import DatabaseError, transaction

    # Granted like every tenant's: no DELETE for the processes, and the trigger for the owner.
    with (
        schema_context(setup.copy.schema_name),
        pytest.raises(DatabaseError, match="permission denied"),
        transaction.atomic(),
    ):
        AuditEvent.objects.all().delete()
    with (
        schema_context(setup.copy.schema_name),
        owner_role(),
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
    ):
        AuditEvent.objects.all().delete()
    connection.set_schema_to_public()
    with schema_context(setup.copy.schema_name):
        assert AuditEvent.objects.filter(action="tenant.import").exists()


def test_passwords_work_in_the_copy_but_sessions_do_not_carry_over(setup):
    with schema_context(setup.copy.schema_name):
        from django.contrib.sessions.models import Session

        assert not Session.objects.exists()
    stale = Client(HTTP_HOST=f"{setup.copy.slug}.localhost")
    stale.cookies[f"{settings.SESSION_COOKIE_NAME}_{setup.copy.slug}"] = setup.session_cookie
    response = stale.get("/")
    assert response.status_code == 302 and "/account/login/" in response["Location"]
    assert login(setup.copy, "dr-who").get("/").status_code == 200
    bad = Client(HTTP_HOST=f"{setup.copy.slug}.localhost")
    response = bad.post("/account/login/", {"username": "dr-who", "password": "wrong"})
    assert response.status_code != 302


def test_the_source_is_untouched_and_keeps_working_on_its_own(setup):
    source = setup.source
    assert index_rows(source.schema_name) == setup.source_rows
    with schema_context(source.schema_name):
        for instance in Instance.objects.select_related("medium"):
            assert instance_path(instance).is_relative_to(source.storage_root)
            assert sha(instance_path(instance)) == instance.sha256
        job = ingest(distinct_instances(["rtdose.dcm"]))
        assert job.stored == 1
        new_uid = Instance.objects.latest("pk").sop_instance_uid
    with schema_context(setup.copy.schema_name):
        assert not Instance.objects.filter(sop_instance_uid=new_uid).exists()
        assert Instance.objects.count() == len(FILES)
    assert login(source, "dr-who").get("/").status_code == 200


# -- refusals: nothing is created --------------------------------------------------------------


def test_import_into_an_existing_slug_is_refused_and_changes_nothing(setup):
    before = (
        Tenant.all_objects.count(),
        TenantEvent.objects.count(),
        tree(Path(setup.source.storage_root)),
    )
    for slug in (setup.source.slug, setup.copy.slug):
        with pytest.raises(BackupError, match=f"“{slug}” already exists"):
            tenant_import(source=setup.export_dir, slug=slug, actor="tests")
    after = (
        Tenant.all_objects.count(),
        TenantEvent.objects.count(),
        tree(Path(setup.source.storage_root)),
    )
    assert after == before
    assert index_rows(setup.copy.schema_name) == setup.source_rows


def test_a_purged_tenants_slug_is_refused_too(setup, made):
    slug = f"bk-gone-{TAG}"
    made.append(slug)
    gone = tenant_create(
        slug=slug, name="Gone", admin_email="a@b.example", created_by="tests"
    ).tenant
    tenant_purge(tenant=tenant_delete(tenant=gone, actor="tests", confirm_slug=slug))
    with pytest.raises(BackupError, match="already exists \\(Purged\\)"):
        tenant_import(source=setup.export_dir, slug=slug, actor="tests")


def test_a_flipped_byte_in_a_file_is_refused_before_anything_is_created(setup, export_copy):
    slug = f"bk-bad-{TAG}"
    entry = next(f for f in setup.manifest.files if f.path.endswith(".dcm"))
    victim = export_copy / "files" / entry.path
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    with pytest.raises(BackupError, match=f"files/{entry.path}: SHA-256"):
        tenant_import(source=export_copy, slug=slug, actor="tests")
    nothing_created(slug)


def test_a_changed_table_file_or_an_extra_file_is_refused(setup, export_copy):
    slug = f"bk-bad2-{TAG}"
    with (export_copy / "db" / "accounts_user.csv").open("a") as out:
        out.write("999,x\n")
    (export_copy / "files" / "smuggled.dcm").write_bytes(b"x")
    with pytest.raises(BackupError) as refused:
        tenant_import(source=export_copy, slug=slug, actor="tests")
    assert "db/accounts_user.csv: SHA-256" in str(refused.value)
    assert "files/smuggled.dcm: not listed in the manifest" in str(refused.value)
    nothing_created(slug)


def test_a_missing_manifest_means_an_unfinished_export_and_is_refused(export_copy):
    slug = f"bk-nomf-{TAG}"
    (export_copy / "manifest.json").unlink()
    with pytest.raises(BackupError, match="has no manifest.json: the export did not finish"):
        tenant_import(source=export_copy, slug=slug, actor="tests")
    nothing_created(slug)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.append(["studies", "9999_from_the_future"]), "made by a newer portal"),
        (lambda m: m.remove(["studies", "0001_initial"]), "older migration state"),
    ],
)
def test_another_migration_state_is_refused(export_copy, change, message):
    slug = f"bk-mig-{TAG}"
    path = export_copy / "manifest.json"
    data = json.loads(path.read_text())
    change(data["migrations"])
    path.write_text(json.dumps(data))
    with pytest.raises(BackupError, match=message):
        tenant_import(source=export_copy, slug=slug, actor="tests")
    nothing_created(slug)


def test_shared_apps_migrations_do_not_count(export_copy, made):
    """A schema records the shared apps' migrations too, but migrate_portal leaves tenants
    alone when only those change: an export without (or with other) rows of theirs fits."""
    slug = f"bk-shared-{TAG}"
    made.append(slug)
    path = export_copy / "manifest.json"
    data = json.loads(path.read_text())
    data["migrations"] = [m for m in data["migrations"] if m[0] != "tenants"]
    data["migrations"].append(["tenants", "9999_only_public_tables"])
    path.write_text(json.dumps(data))
    tenant = tenant_import(source=export_copy, slug=slug, actor="tests")
    with schema_context(tenant.schema_name):
        assert Instance.objects.count() == len(FILES)


def test_a_path_leaving_the_root_in_a_crafted_manifest_is_refused(export_copy):
    slug = f"bk-evil-{TAG}"
    path = export_copy / "manifest.json"
    data = json.loads(path.read_text())
    data["files"][0]["path"] = "../../etc/evil"
    path.write_text(json.dumps(data))
    with pytest.raises(BackupError, match="unsafe path"):
        tenant_import(source=export_copy, slug=slug, actor="tests")
    nothing_created(slug)


def test_a_medium_outside_the_exported_root_is_refused(export_copy):
    slug = f"bk-medium-{TAG}"
    path = export_copy / "manifest.json"
    data = json.loads(path.read_text())
    data["source"]["media"][0]["root"] = "/elsewhere/disk"
    path.write_text(json.dumps(data))
    with pytest.raises(BackupError, match="outside the exported storage root"):
        tenant_import(source=export_copy, slug=slug, actor="tests")
    nothing_created(slug)


def test_a_storage_root_outside_the_portals_is_refused(setup, tmp_path):
    slug = f"bk-root-{TAG}"
    with pytest.raises(BackupError, match="must lie inside"):
        tenant_import(
            source=setup.export_dir, slug=slug, storage_root=str(tmp_path / "x"), actor="tests"
        )
    nothing_created(slug)
    assert not (tmp_path / "x").exists()


def test_an_ae_title_in_use_is_refused(setup):
    slug = f"bk-ae-{TAG}"
    with pytest.raises(BackupError, match=f"belongs or belonged to tenant “{setup.source.slug}”"):
        tenant_import(
            source=setup.export_dir, slug=slug, ae_title=setup.source.ae_title, actor="tests"
        )
    nothing_created(slug)


def test_a_failure_half_way_leaves_nothing(setup, monkeypatch):
    slug = f"bk-half-{TAG}"

    def fail(*args: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(backup, "_rewrite_paths", fail)
    events, tenants = TenantEvent.objects.count(), Tenant.all_objects.count()
    with pytest.raises(RuntimeError, match="disk on fire"):
        tenant_import(source=setup.export_dir, slug=slug, actor="tests")
    nothing_created(slug)
    assert (TenantEvent.objects.count(), Tenant.all_objects.count()) == (events, tenants)


# -- export checks -----------------------------------------------------------------------------


def test_export_refuses_a_file_that_differs_from_the_index_unless_allowed(setup, tmp_path):
    with schema_context(setup.source.schema_name):
        instance = Instance.objects.select_related("medium").earliest("pk")
        path = instance_path(instance)
    original = path.read_bytes()
    try:
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
        with pytest.raises(BackupError, match=f"{instance.relative_path}: SHA-256"):
            tenant_export(tenant=setup.source, target=tmp_path / "bad", actor="tests")
        assert not (tmp_path / "bad").exists()
        manifest = tenant_export(
            tenant=setup.source, target=tmp_path / "kept", actor="tests", allow_problems=True
        )
        assert any(instance.sop_instance_uid in p for p in manifest.problems)
    finally:
        path.write_bytes(original)


def test_export_reports_an_indexed_file_that_is_missing(setup, tmp_path):
    with schema_context(setup.source.schema_name):
        instance = Instance.objects.select_related("medium").latest("pk")
        path = instance_path(instance)
    moved = tmp_path / "aside.dcm"
    shutil.move(path, moved)
    try:
        with pytest.raises(BackupError, match=f"file of instance {instance.sop_instance_uid} is"):
            tenant_export(tenant=setup.source, target=tmp_path / "bad", actor="tests")
    finally:
        shutil.move(moved, path)


def test_export_refuses_a_directory_that_is_not_empty(setup, tmp_path):
    (tmp_path / "something").write_text("x")
    with pytest.raises(BackupError, match="not an empty directory"):
        tenant_export(tenant=setup.source, target=tmp_path, actor="tests")
    assert [p.name for p in tmp_path.iterdir()] == ["something"]


def test_export_is_audited_in_the_source(setup):
    with schema_context(setup.source.schema_name):
        assert AuditEvent.objects.filter(action="tenant.export").exists()
    assert TenantEvent.objects.filter(tenant=setup.source, action="export").exists()


# -- the command -------------------------------------------------------------------------------


def run(*args: str) -> str:
    out = StringIO()
    call_command("tenant", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_command_export_verify_import(setup, made, tmp_path):
    target = tmp_path / "cli-export"
    with schema_context(setup.source.schema_name):
        instances = Instance.objects.count()
    out = run("export", setup.source.slug, str(target))
    assert f"exported {setup.source.slug}" in out
    assert "every checksum matches" in run("verify", str(target))
    slug = f"bk-cli-{TAG}"
    made.append(slug)
    out = run("import", str(target), slug, "--ae-title", f"CLI{TAG.upper()}", "--name", "CLI")
    assert f"as {slug}" in out
    tenant = Tenant.objects.get(slug=slug)
    assert (tenant.ae_title, tenant.name) == (f"CLI{TAG.upper()}", "CLI")
    with schema_context(tenant.schema_name):
        assert Instance.objects.count() == instances
    with pytest.raises(CommandError, match="already exists"):
        run("import", str(target), slug)
    (target / "manifest.json").unlink()
    with pytest.raises(CommandError, match="no manifest.json"):
        run("verify", str(target))


@pytest.mark.parametrize("sub", ["export", "import", "verify"])
def test_subcommand_help(sub, capsys):
    with pytest.raises(SystemExit) as exit_:
        call_command("tenant", sub, "--help")
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "usage:" in text
    assert {"export": "manifest.json", "import": "--ae-title", "verify": "SHA-256"}[sub] in text


# -- review findings: crafted backups, killed imports, roots, links, modes --------------------


def craft(export: Path, table: str, old: str, new: str) -> None:
    """Change one table's CSV as an attacker would, and make the manifest agree with it."""
    csv_file = export / "db" / f"{table}.csv"
    data = csv_file.read_bytes()
    assert old.encode() in data, (old, data[:2000])
    csv_file.write_bytes(data.replace(old.encode(), new.encode(), 1))
    path = export / "manifest.json"
    manifest = json.loads(path.read_text())
    entry = next(t for t in manifest["tables"] if t["name"] == table)
    entry["size"], entry["sha256"] = csv_file.stat().st_size, sha(csv_file)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("table", "old", "new", "column"),
    [
        # an absolute path elsewhere: retry would move that file into the new tenant
        ("studies_ingestitem", "{root}/.quarantine/", "/etc/", "quarantine_path"),
        # inside the old root by its prefix, outside once resolved
        ("studies_ingestitem", "{root}/.quarantine/", "{root}/../victim/", "quarantine_path"),
        ("studies_ingestitem", "{root}/.staging/", "{victim}/", "staged_path"),
        ("studies_storagemedium", "{root}/default", "{root}/../elsewhere", "root"),
    ],
)
def test_a_crafted_path_in_the_rows_outside_the_new_root_is_refused(
    setup, made, export_copy, table, old, new, column
):
    slug = f"bk-craft-{uuid.uuid4().hex[:6]}"
    made.append(slug)  # purged should the refusal ever fail
    values = {"root": str(Path(setup.source.storage_root).resolve())}
    values["victim"] = setup.copy.storage_root + "/default"  # another tenant's files
    craft(export_copy, table, old.format(**values), new.format(**values))
    with pytest.raises(
        BackupError,
        match=rf"outside the new tenant's storage root[\s\S]*"
        rf"{table} id=\d+ {column}: ",
    ):
        tenant_import(source=export_copy, slug=slug, actor="tests")
    nothing_created(slug)


def test_ingest_never_touches_a_staged_or_quarantined_file_outside_the_tenants_root(
    setup, tmp_path
):
    """Defence in depth: a row naming another tenant's file (however it got there) is
    rejected as staging-lost by processing and skipped by a retry; the file stays."""
    victim = tmp_path / "victim.dcm"
    victim.write_bytes(b"another tenant's file")
    with tenant_context(setup.copy):
        job = IngestJob.objects.create(source="upload", status=IngestJobStatus.RUNNING)
        item = IngestItem.objects.create(job=job, name="x.dcm", staged_path=str(victim))
        assert ingest_items_process(item_ids=[item.pk])[item.pk].outcome == ItemOutcome.REJECTED
        item.refresh_from_db()
        assert (item.reason_code, item.quarantine_path) == ("staging-lost", "")
        assert victim.read_bytes() == b"another tenant's file"
        IngestJob.objects.filter(pk=job.pk).update(status=IngestJobStatus.FAILED)
        IngestItem.objects.filter(pk=item.pk).update(
            reason_code="quota", quarantine_path=str(victim)
        )
        job.refresh_from_db()
        with pytest.raises(ValidationError, match="Nothing to retry"):
            ingest_job_retry(job=job)
        item.refresh_from_db()
        assert item.outcome == ItemOutcome.REJECTED
    assert victim.read_bytes() == b"another tenant's file"


KILLED_IMPORT = """
import os, signal, sys
from pathlib import Path

import django

django.setup()
from tenants import backup

def killed(*args):
    os.kill(os.getpid(), signal.SIGKILL)  # after the files were copied, in the transaction

backup._load_tables = killed
backup.tenant_import(source=Path(sys.argv[1]), slug=sys.argv[2], actor="tests")
"""


def test_an_import_killed_half_way_leaves_the_root_alone_and_a_retry_succeeds(setup, made):
    slug = f"bk-kill-{TAG}"
    made.append(slug)
    env = os.environ | {
        "DATABASE_URL": test_database_url(),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PORTAL_STORAGE_ROOT": str(settings.PORTAL_STORAGE_ROOT),
    }
    child = subprocess.run(
        [sys.executable, "-c", KILLED_IMPORT, str(setup.export_dir), slug],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    base = Path(settings.PORTAL_STORAGE_ROOT)
    left = list(base.glob(f".import-{slug}-*"))
    assert len(left) == 1 and any(p.is_file() for p in left[0].rglob("*")), "files were copied"
    assert not (base / slug).exists()
    assert not Tenant.all_objects.filter(slug=slug).exists()

    tenant = tenant_import(source=setup.export_dir, slug=slug, actor="tests")
    assert not list(base.glob(f".import-{slug}-*")), "the dead import's directory is gone"
    root = Path(tenant.storage_root)
    assert root == (base / slug).resolve()
    assert Tenant.objects.get(slug=slug).storage_root == str(root)
    assert tree(root) == {f.path: f.sha256 for f in setup.manifest.files}
    with schema_context(tenant.schema_name):
        for medium in StorageMedium.objects.all():
            assert Path(medium.root).is_relative_to(root) and Path(medium.root).is_dir()
        for instance in Instance.objects.select_related("medium"):
            assert sha(instance_path(instance)) == instance.sha256


def test_a_storage_root_on_in_or_around_another_tenants_root_is_refused(setup, made):
    base = Path(settings.PORTAL_STORAGE_ROOT)
    source_root = Path(setup.source.storage_root).resolve()
    nest = f"bk-nest-{TAG}"
    made.append(nest)
    tenant_create(
        slug=nest,
        name="Nested",
        admin_email="a@nest.example",
        storage_root=str(base / nest / "inner"),
        created_by="tests",
    )
    cases = [(source_root, "is"), (source_root / "sub", "lies inside"), (base / nest, "contains")]
    for number, (root, relation) in enumerate(cases):
        slug = f"bk-on{number}-{TAG}"
        made.append(slug)
        with pytest.raises(BackupError, match=f"{relation} the storage root of tenant"):
            tenant_import(source=setup.export_dir, slug=slug, storage_root=str(root), actor="tests")
        nothing_created(slug)
    assert not (source_root / "sub").exists()


@pytest.mark.parametrize("linked", ["files/default", "db"])
def test_a_symbolic_link_in_the_export_is_refused(made, export_copy, tmp_path, linked):
    slug = f"bk-link-{TAG}"
    made.append(slug)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(export_copy / linked, elsewhere)  # same content, so every checksum matches
    (export_copy / linked).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(BackupError, match=f"{linked}: (a symbolic link|not a directory)"):
        tenant_import(source=export_copy, slug=slug, actor="tests")
    nothing_created(slug)
    with pytest.raises(BackupError):
        manifest_verify(export_copy)


def test_an_export_is_for_its_owner_only_and_verify_warns_otherwise(setup, export_copy):
    umask = os.umask(0o077)
    os.umask(umask)
    for path in [setup.export_dir, *setup.export_dir.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        expected = (0o700 if path.is_dir() else 0o600) & ~umask
        assert mode == expected, (path, oct(mode))
    assert not any("permissions" in p for p in manifest_verify(setup.export_dir).problems)
    (export_copy / "db" / "accounts_user.csv").chmod(0o644)
    problems = manifest_verify(export_copy).problems
    assert any("insecure permissions" in p and "db/accounts_user.csv" in p for p in problems)
    err = StringIO()
    call_command("tenant", "verify", str(export_copy), stdout=StringIO(), stderr=err)
    assert "insecure permissions" in err.getvalue()
