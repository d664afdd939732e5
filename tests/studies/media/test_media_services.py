"""Storage media rules, as the services enforce them for both the pages and the API."""

from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django_tenants.utils import schema_context

from audit.models import AuditEvent
from studies.media import services
from studies.models import StorageMedium
from tests.studies.conftest import GIB, audit_actions, media_state


def refused(tenant, field: str, **arguments) -> str:
    """Call medium_create, expect a refusal on `field`, and return its message."""
    with schema_context(tenant.schema_name), pytest.raises(ValidationError) as caught:
        services.medium_create(
            tenant=tenant,
            **{"name": "new", "root": "new", "capacity_bytes": GIB, **arguments},
        )
    errors = caught.value.message_dict
    assert field in errors, errors
    return errors[field][0]


def test_a_valid_medium_gets_its_directory_a_row_and_an_audit_row(alpha, storage, add_medium):
    medium = add_medium("disk2", root="disk2", capacity_bytes=2 * GIB, priority=5)
    assert medium.root == str(storage.resolve() / "disk2")
    assert Path(medium.root).is_dir() and not any(Path(medium.root).iterdir())
    with schema_context(alpha.schema_name):
        stored = StorageMedium.objects.get(name="disk2")
        event = AuditEvent.objects.get(action="medium.create")
    assert (stored.capacity_bytes, stored.priority, stored.status) == (2 * GIB, 5, "online")
    assert event.object_type == "storagemedium" and event.object_id == str(stored.pk)
    assert event.details["root"] == medium.root


def test_an_absolute_root_inside_the_allowed_root_is_accepted(storage, add_medium):
    medium = add_medium("abs", root=str(storage / "x" / ".." / "abs"))
    assert medium.root == str(storage.resolve() / "abs")


@pytest.mark.parametrize(
    "root",
    ["../other", "sub/../../other", "/etc", "/etc/pacs", "{parent}", "{parent}/beta/x", "{beta}/x"],
)
def test_roots_that_escape_the_allowed_root_are_refused(alpha, beta, storage, root):
    root = root.format(parent=storage.parent, beta=beta.storage_root)
    before = media_state(alpha)
    message = refused(alpha, "root", root=root)
    assert f"must lie inside the tenant's allowed root {storage.resolve()}" in message
    assert media_state(alpha) == before
    assert not (storage.parent / "other").exists() and not Path("/etc/pacs").exists()
    assert not (Path(beta.storage_root) / "x").exists()
    assert audit_actions(alpha) == []


def test_a_symlink_inside_the_root_pointing_outside_is_refused(alpha, storage, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (storage / "sneaky").symlink_to(outside)
    message = refused(alpha, "root", root="sneaky/disk")
    assert f"resolves to {outside.resolve() / 'disk'}" in message
    assert not (outside / "disk").exists()


def test_the_allowed_root_itself_is_refused(alpha, storage):
    message = refused(alpha, "root", root=str(storage))
    assert "its own directory below" in message


def test_a_root_that_cannot_be_created_is_refused_with_the_os_error(alpha, storage):
    (storage / "plainfile").write_text("not a directory")
    before = media_state(alpha)
    message = refused(alpha, "root", root="plainfile/disk")
    assert "cannot be created or written" in message and "Not a directory" in message
    assert media_state(alpha) == before
    assert (storage / "plainfile").is_file()


def test_a_refused_root_leaves_no_directory_behind(alpha, storage):
    refused(alpha, "low_watermark", root="deep/er/disk", low_watermark=95, high_watermark=90)
    assert not (storage / "deep").exists()


@pytest.mark.parametrize(
    ("root", "relation"),
    [("default", "is the root of"), ("default/inner", "lies inside")],
)
def test_roots_that_overlap_another_medium_are_refused(alpha, storage, root, relation):
    message = refused(alpha, "root", root=root)
    assert f"{relation} medium “default”" in message
    assert not (storage / "default" / "inner").exists()


def test_a_root_containing_another_medium_is_refused(alpha, storage, add_medium):
    add_medium("nested", root="outer/nested")
    message = refused(alpha, "root", root="outer")
    assert "contains medium “nested”" in message


def test_overlap_is_judged_after_resolving_symlinks(alpha, storage):
    (storage / "alias").symlink_to(storage / "default")
    message = refused(alpha, "root", root="alias")
    assert "is the root of medium “default”" in message


@pytest.mark.parametrize(
    ("low", "high", "field"),
    [
        (0, 90, "low_watermark"),
        (-5, 90, "low_watermark"),
        (90, 90, "low_watermark"),
        (95, 90, "low_watermark"),
        (80, 101, "high_watermark"),
    ],
)
def test_watermarks_must_be_ordered_within_1_to_100(alpha, storage, low, high, field):
    before = media_state(alpha)
    message = refused(alpha, field, low_watermark=low, high_watermark=high)
    assert "watermark" in message
    assert media_state(alpha) == before and not (storage / "new").exists()


@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_must_be_positive(alpha, storage, capacity):
    assert "more than 0" in refused(alpha, "capacity_bytes", capacity_bytes=capacity)
    assert not (storage / "new").exists()


def test_no_medium_may_be_larger_than_the_quota(alpha, storage, add_medium):
    message = refused(alpha, "capacity_bytes", capacity_bytes=10 * GIB + 1)
    assert "exceeds the tenant's quota of 10.0 GiB" in message
    assert not (storage / "new").exists()


def test_media_together_may_exceed_the_quota_which_limits_stored_bytes(alpha, storage, add_medium):
    """A second disk to fill when the first is full, or to migrate onto, is normal."""
    add_medium("second", capacity_bytes=10 * GIB)
    add_medium("third", capacity_bytes=8 * GIB)


def test_names_are_unique_regardless_of_case(alpha, storage):
    assert "exists already" in refused(alpha, "name", name="Default")


def test_an_object_medium_on_an_internal_endpoint_is_refused_unless_listed(alpha, storage):
    """A tenant admin cannot point the archive's workers at the metadata service or the
    platform's own network: only https to public addresses, or endpoints the operator lists."""
    for endpoint in ("http://example.org", "https://169.254.169.254", "https://127.0.0.1:9000"):
        message = refused(
            alpha,
            "endpoint_url",
            kind="s3",
            root="",
            endpoint_url=endpoint,
            bucket="scans",
            access_key_id="AKIA",
            secret_key="s",
        )
        assert "PORTAL_S3_ALLOWED_ENDPOINTS" in message


def test_update_applies_the_same_rules_and_audits_the_changes(alpha, storage, add_medium):
    medium = add_medium("disk2")
    before = media_state(alpha)
    with schema_context(alpha.schema_name):
        for arguments, field in [
            ({"capacity_bytes": 11 * GIB}, "capacity_bytes"),
            ({"low_watermark": 95}, "low_watermark"),
            ({"root": "../escape"}, "root"),
            ({"root": "default"}, "root"),
            ({"name": "DEFAULT"}, "name"),
        ]:
            with pytest.raises(ValidationError) as caught:
                services.medium_update(tenant=alpha, medium=medium, **arguments)
            assert field in caught.value.message_dict
        assert media_state(alpha) == before
        updated = services.medium_update(
            tenant=alpha, medium=medium, capacity_bytes=6 * GIB, high_watermark=95
        )
        event = AuditEvent.objects.get(action="medium.update")
    assert (updated.capacity_bytes, updated.high_watermark) == (6 * GIB, 95)
    assert event.details["changes"]["capacity_bytes"] == [GIB, 6 * GIB]
    assert not (storage.parent / "escape").exists()


def test_update_without_changes_writes_no_audit_row(alpha, storage, add_medium):
    medium = add_medium("disk2")
    with schema_context(alpha.schema_name):
        services.medium_update(tenant=alpha, medium=medium, name="disk2", root="disk2")
    assert audit_actions(alpha) == ["medium.create"]


def test_root_moves_only_while_the_old_root_holds_no_files(alpha, storage, add_medium):
    medium = add_medium("disk2")
    (Path(medium.root) / "1.2.3.dcm").write_bytes(b"x" * 10)
    with schema_context(alpha.schema_name):
        with pytest.raises(ValidationError, match="holds 1 file"):
            services.medium_update(tenant=alpha, medium=medium, root="disk3")
        assert not (storage / "disk3").exists()
        (Path(medium.root) / "1.2.3.dcm").unlink()
        moved = services.medium_update(tenant=alpha, medium=medium, root="disk3")
    assert moved.root == str(storage.resolve() / "disk3") and Path(moved.root).is_dir()


@pytest.mark.parametrize("status", ["read-only", "offline", "retired", "online"])
def test_every_status_can_be_set_and_is_audited(alpha, storage, add_medium, status):
    medium = add_medium("disk2", status="offline" if status == "online" else "online")
    with schema_context(alpha.schema_name):
        services.medium_set_status(tenant=alpha, medium=medium, status=status)
        assert StorageMedium.objects.get(pk=medium.pk).status == status
        event = AuditEvent.objects.get(action="medium.status_change")
    assert event.details["to"] == status


def test_a_medium_holding_files_can_always_be_retired(alpha, storage, add_medium):
    medium = add_medium("disk2")
    (Path(medium.root) / "f.dcm").write_bytes(b"x")
    with schema_context(alpha.schema_name):
        services.medium_set_status(tenant=alpha, medium=medium, status="retired")
        assert StorageMedium.objects.get(pk=medium.pk).status == "retired"


def test_leaving_retirement_rechecks_the_quota(alpha, storage, add_medium):
    medium = add_medium("disk2", capacity_bytes=6 * GIB)
    with schema_context(alpha.schema_name):
        services.medium_set_status(tenant=alpha, medium=medium, status="retired")
        alpha.quota_bytes = 5 * GIB  # lowered while the medium was retired
        alpha.save(update_fields=["quota_bytes"])
        with pytest.raises(ValidationError, match="exceeds the tenant's quota"):
            services.medium_set_status(tenant=alpha, medium=medium, status="offline")
        assert StorageMedium.objects.get(pk=medium.pk).status == "retired"


def test_going_online_needs_a_writable_root(alpha, storage, add_medium):
    medium = add_medium("disk2", status="offline")
    Path(medium.root).rmdir()  # the disk is not mounted
    with schema_context(alpha.schema_name):
        with pytest.raises(ValidationError, match="is the disk mounted"):
            services.medium_set_status(tenant=alpha, medium=medium, status="online")
        assert StorageMedium.objects.get(pk=medium.pk).status == "offline"
    assert not Path(medium.root).exists()


def test_a_medium_holding_a_file_cannot_be_deleted(alpha, storage, add_medium):
    medium = add_medium("disk2")
    (Path(medium.root) / "1.2").mkdir()
    (Path(medium.root) / "1.2" / "3.dcm").write_bytes(b"x" * 100)
    with schema_context(alpha.schema_name):
        with pytest.raises(ValidationError, match="holds 1 file .*retire it instead"):
            services.medium_delete(tenant=alpha, medium=medium)
        assert StorageMedium.objects.filter(pk=medium.pk).exists()
    assert (Path(medium.root) / "1.2" / "3.dcm").exists()
    assert audit_actions(alpha) == ["medium.create"]


def test_an_empty_medium_is_deleted_with_its_empty_directory(
    alpha, storage, add_medium, django_capture_on_commit_callbacks
):
    medium = add_medium("disk2", root="disk2/inner")
    (Path(medium.root) / "empty-series").mkdir()
    with (
        schema_context(alpha.schema_name),
        django_capture_on_commit_callbacks(execute=True),
    ):
        services.medium_delete(tenant=alpha, medium=medium)
    with schema_context(alpha.schema_name):
        assert not StorageMedium.objects.filter(pk=medium.pk).exists()
    assert not Path(medium.root).exists() and (storage / "disk2").is_dir()
    assert audit_actions(alpha) == ["medium.create", "medium.delete"]


def test_probe_writes_reads_back_and_deletes_a_test_object(alpha, storage, add_medium):
    medium = add_medium("disk2")
    with schema_context(alpha.schema_name):
        result = services.medium_probe(tenant=alpha, medium=medium, size_bytes=1 << 20)
        stored = StorageMedium.objects.get(pk=medium.pk)
        event = AuditEvent.objects.get(action="medium.probe")
    assert result.ok, result.message
    assert result.free_bytes and result.total_bytes and result.free_bytes <= result.total_bytes
    assert result.write_mb_per_s and result.write_mb_per_s > 0 and result.read_mb_per_s
    assert "Wrote, read back and deleted 1.0 MiB" in result.message
    assert list(Path(medium.root).iterdir()) == []
    assert stored.last_probe_ok is True and stored.last_probe_at is not None
    assert stored.last_probe_message == result.message
    assert event.outcome == "success" and event.details["free_bytes"] == result.free_bytes


def test_probe_reports_a_missing_mount_and_audits_the_failure(alpha, storage, add_medium):
    medium = add_medium("disk2")
    Path(medium.root).rmdir()
    with schema_context(alpha.schema_name):
        result = services.medium_probe(tenant=alpha, medium=medium)
        event = AuditEvent.objects.get(action="medium.probe")
        assert StorageMedium.objects.get(pk=medium.pk).last_probe_ok is False
    assert not result.ok and "is the disk mounted" in result.message
    assert event.outcome == "failure"
    assert not Path(medium.root).exists()  # a probe never creates the directory


def test_probe_refuses_a_root_swapped_for_a_symlink_out(alpha, storage, add_medium, tmp_path):
    medium = add_medium("disk2")
    Path(medium.root).rmdir()
    Path(medium.root).symlink_to(tmp_path)
    with schema_context(alpha.schema_name):
        result = services.medium_probe(tenant=alpha, medium=medium)
    assert not result.ok and "outside the allowed root" in result.message
    assert list(tmp_path.iterdir()) == []


def test_measured_usage_comes_from_the_files(alpha, storage, add_medium):
    medium = add_medium("disk2")
    (Path(medium.root) / "a.dcm").write_bytes(b"x" * 3000)
    with schema_context(alpha.schema_name):
        measured = dict((m.name, u) for m, u in services.media_measure_usage())
        stored = StorageMedium.objects.get(pk=medium.pk)
    assert measured["disk2"].files == 1 and stored.used_bytes == 3000 and stored.file_count == 1


def test_a_lowered_quota_blocks_growth_but_not_other_edits(alpha, storage, add_medium):
    medium = add_medium("disk2", capacity_bytes=6 * GIB)
    alpha.quota_bytes = 5 * GIB  # the super-admin lowered it below what media hold
    alpha.save(update_fields=["quota_bytes"])
    with schema_context(alpha.schema_name):
        services.medium_update(tenant=alpha, medium=medium, priority=2, capacity_bytes=6 * GIB)
        with pytest.raises(ValidationError, match="quota of 5.0 GiB"):
            services.medium_update(tenant=alpha, medium=medium, capacity_bytes=6 * GIB + 1)
        assert StorageMedium.objects.get(pk=medium.pk).priority == 2
