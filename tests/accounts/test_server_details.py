"""Absolute server paths, probe messages and job tracebacks are for admins: the other roles
see that a medium exists and that a job failed, not how the server is laid out."""

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_tenants.utils import schema_context

from accounts.models import Role, TokenScope
from accounts.services import api_token_create
from jobs.models import JobRun, JobStatus
from studies.models import IngestJob, StorageMedium
from tests.conftest import logged_in, tenant_client
from tests.studies.conftest import storage  # noqa: F401  (the fixture: files cleaned up)

pytestmark = pytest.mark.usefixtures("storage")

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/opt/portal/studies/maintenance/services.py", line 240, in verify\n'
    "OSError: [Errno 5] Input/output error: '/srv/pacs/alpha/default/1.2.3'\n"
)


def medium_of(tenant) -> StorageMedium:
    with schema_context(tenant.schema_name):
        medium = StorageMedium.objects.get(name="default")
        StorageMedium.objects.filter(pk=medium.pk).update(
            last_probe_message=f"Probe of {medium.root} failed: disk gone",
            last_probe_at=timezone.now(),
            last_probe_ok=False,
        )
        medium.refresh_from_db()
        return medium


def add_failed_run(tenant):
    with schema_context(tenant.schema_name):
        JobRun.objects.create(
            job="verification",
            period="2026-12-01",
            status=JobStatus.FAILED,
            error=TRACEBACK,
            counts={"problems": 1},
        )


def session(make_user, tenant, role):
    return logged_in(tenant_client(tenant), make_user(tenant, role=role).username)


def token(make_user, tenant, role, scope):
    user = make_user(tenant, role=role)
    with schema_context(tenant.schema_name):
        raw = api_token_create(user=user, name="script", scope=scope)[1]
    return tenant_client(tenant, HTTP_AUTHORIZATION=f"Bearer {raw}")


def test_operators_see_media_and_failures_but_not_paths_or_tracebacks(
    make_user,
    alpha,
    beta,
):
    medium = medium_of(alpha)
    add_failed_run(alpha)
    operator = session(make_user, alpha, Role.OPERATOR)
    pages = [
        operator.get(url).content.decode()
        for url in ("/", "/storage/", f"/storage/{medium.pk}/", "/jobs/?kind=periodic")
    ]
    assert "default" in pages[1] and "Failed with OSError" in pages[3]
    for page in pages:
        assert medium.root not in page
        assert "/srv/pacs" not in page and "/opt/portal" not in page and "Traceback" not in page

    admin = session(make_user, alpha, Role.ADMIN)
    assert medium.root in admin.get("/storage/").content.decode()
    detail = admin.get(f"/storage/{medium.pk}/").content.decode()
    assert medium.root in detail and "disk gone" in detail
    runs = admin.get("/jobs/?kind=periodic").content.decode()
    assert "Failed with OSError" in runs and "/srv/pacs/alpha/default/1.2.3" in runs

    # beta's admin, who may see paths on beta's site, sees none of alpha's.
    beta_admin = session(make_user, beta, Role.ADMIN)
    assert medium.root not in beta_admin.get("/storage/").content.decode()
    assert "/srv/pacs" not in beta_admin.get("/jobs/?kind=periodic").content.decode()


@pytest.mark.parametrize(
    ("role", "scope", "sees"),
    [
        (Role.ADMIN, TokenScope.FULL, True),
        (Role.ADMIN, TokenScope.READ, True),
        (Role.OPERATOR, TokenScope.FULL, False),
        (Role.OPERATOR, TokenScope.READ, False),
    ],
)
def test_the_media_api_names_directories_to_admins_only(
    make_user,
    alpha,
    role,
    scope,
    sees,
):
    medium = medium_of(alpha)
    client = token(make_user, alpha, role, scope)
    listed = client.get("/api/v1/media/").json()["results"]
    one = client.get(f"/api/v1/media/{medium.pk}/").json()
    for body in (listed[0], one):
        assert body["name"] == "default"
        if sees:
            assert body["root"] == medium.root and "disk gone" in body["last_probe_message"]
        else:
            assert body["root"] is None and body["last_probe_message"] is None


def test_a_folder_job_is_named_by_the_folder_not_its_server_path(
    alpha,
    tmp_path,
):
    folder = tmp_path / "incoming-ct"
    folder.mkdir()
    (folder / "junk.bin").write_bytes(b"not dicom")
    call_command("ingest_folder", alpha.slug, str(folder))
    with schema_context(alpha.schema_name):
        (job,) = IngestJob.objects.filter(source="folder")
    assert job.description == "folder incoming-ct"
