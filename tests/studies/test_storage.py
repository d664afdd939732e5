"""Storage media: usage is measured from each tenant's own files, paths stay inside roots."""

import shutil
from pathlib import Path

import pytest
from django_tenants.utils import schema_context

from studies.media.services import media_measure_usage
from studies.models import StorageMedium
from studies.storage import StoragePathError, measure_usage, resolve_inside


def test_usage_counts_only_the_tenants_own_files(alpha, beta):
    with schema_context(alpha.schema_name):
        alpha_root = Path(StorageMedium.objects.get(name="default").root)
    with schema_context(beta.schema_name):
        beta_before = StorageMedium.objects.get(name="default")
        list(media_measure_usage())
        beta_baseline = StorageMedium.objects.get(name="default").used_bytes
    study = alpha_root / "1.2.840.1" / "1.2.840.1.1"
    study.mkdir(parents=True, exist_ok=True)
    try:
        (study / "1.2.840.1.1.1.dcm").write_bytes(b"\0" * 4096)
        with schema_context(alpha.schema_name):
            [(medium, usage)] = list(media_measure_usage())
            assert usage.files >= 1 and usage.bytes >= 4096
            assert StorageMedium.objects.get(pk=medium.pk).used_bytes == usage.bytes
        with schema_context(beta.schema_name):
            list(media_measure_usage())
            assert StorageMedium.objects.get(name="default").used_bytes == beta_baseline
            assert beta_before.root != str(alpha_root)
    finally:
        shutil.rmtree(alpha_root / "1.2.840.1")


def test_measure_usage_does_not_follow_symlinks_out_of_the_medium(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big").write_bytes(b"x" * 10_000)
    medium = tmp_path / "medium"
    medium.mkdir()
    (medium / "a.dcm").write_bytes(b"y" * 100)
    (medium / "escape").symlink_to(outside)
    usage = measure_usage(medium)
    assert usage.bytes < 10_000


@pytest.mark.parametrize("candidate", ["../x", "a/../../x", "/etc/passwd"])
def test_resolve_inside_refuses_escapes(tmp_path, candidate):
    with pytest.raises(StoragePathError):
        resolve_inside(tmp_path / "root", tmp_path / "root" / candidate)


def test_resolve_inside_refuses_symlinked_escapes(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(StoragePathError):
        resolve_inside(root, root / "link" / "elsewhere")
    assert resolve_inside(root, root / "a" / "b") == (root / "a" / "b").resolve()
