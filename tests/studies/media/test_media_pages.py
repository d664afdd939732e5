"""/storage/ in the browser's shoes: list, add, edit, status, probe, delete, roles, isolation."""

from pathlib import Path

import pytest
from django_tenants.utils import schema_context

from accounts.models import Role
from studies.models import StorageMedium
from tests.conftest import logged_in, tenant_client
from tests.studies.conftest import GIB, audit_actions, media_state

BETA_ID = 987_654_321


@pytest.fixture
def client_as(alpha, make_user):
    """A logged-in alpha client of a role (None: anonymous)."""

    def make(role: str | None):
        if role is None:
            return tenant_client(alpha)
        user = make_user(alpha, role=role)
        return logged_in(tenant_client(alpha), user.username)

    return make


@pytest.fixture
def beta_medium(beta, storage) -> StorageMedium:
    """A beta medium whose id alpha does not have (ids are per schema)."""
    with schema_context(beta.schema_name):
        return StorageMedium.objects.create(
            pk=BETA_ID,
            name="beta-secret-disk",
            root=str(Path(beta.storage_root) / "secret"),
            capacity_bytes=GIB,
        )


VIEW_PAGES = ["/storage/", "/storage/{pk}/"]
MANAGE_PAGES = [
    "/storage/new/",
    "/storage/refresh/",
    "/storage/{pk}/edit/",
    "/storage/{pk}/status/?status=retired",
    "/storage/{pk}/delete/",
]


@pytest.mark.parametrize("role", [*Role, None])
@pytest.mark.parametrize("page", VIEW_PAGES + MANAGE_PAGES)
def test_every_page_opens_exactly_for_the_roles_allowed(client_as, add_medium, role, page):
    medium = add_medium("disk2")
    response = client_as(role).get(page.format(pk=medium.pk))
    if role is None:
        assert response.status_code == 302 and "/account/login/" in response["Location"]
    elif role == Role.ADMIN or (role == Role.OPERATOR and page in VIEW_PAGES):
        assert response.status_code == 200
    else:
        assert response.status_code == 403


def _posts(pk: int) -> list[tuple[str, dict]]:
    return [
        ("/storage/new/", _form(name="intruder", root="intruder")),
        (f"/storage/{pk}/edit/", _form(name="renamed", root="disk2")),
        (f"/storage/{pk}/status/", {"status": "retired"}),
        (f"/storage/{pk}/probe/", {}),
        (f"/storage/{pk}/delete/", {}),
        ("/storage/refresh/", {}),
    ]


def _form(**overrides):
    return {
        "name": "disk3",
        "kind": "filesystem",
        "root": "disk3",
        "capacity_gib": "1",
        "high_watermark": "90",
        "low_watermark": "80",
        "priority": "0",
        "status": "online",
        **overrides,
    }


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.VIEWER, Role.AUDITOR, None])
def test_no_change_is_possible_without_storage_manage(alpha, storage, client_as, add_medium, role):
    medium = add_medium("disk2")
    (Path(medium.root) / "f.dcm").write_bytes(b"x" * 10)
    client = client_as(role)
    before = media_state(alpha)
    for path, data in _posts(medium.pk):
        response = client.post(path, data)
        assert response.status_code == (302 if role is None else 403), path
        if role is None:
            assert "/account/login/" in response["Location"]
    assert media_state(alpha) == before
    with schema_context(alpha.schema_name):
        assert StorageMedium.objects.get(pk=medium.pk).used_bytes == 0  # refresh did not run
    assert audit_actions(alpha) == ["medium.create"]
    assert not (storage / "intruder").exists()


def test_the_list_shows_alphas_media_with_usage_and_chart_but_never_betas(
    alpha_admin_client, add_medium, beta_medium, django_assert_max_num_queries
):
    add_medium("disk2", priority=3)
    with django_assert_max_num_queries(16):  # constant: one more for the tenant's branding
        page = alpha_admin_client.get("/storage/").content.decode()
    assert "disk2" in page and "default" in page
    assert "beta-secret-disk" not in page and "/beta/" not in page
    assert 'class="usage-chart"' in page and "Allocated capacity" in page
    assert page.index("disk2") < page.index(">default<")  # highest priority first
    filtered = alpha_admin_client.get("/storage/?status=offline").content.decode()
    assert "No medium matches" in filtered


def test_the_dashboard_draws_the_storage_chart(alpha_admin_client, storage):
    page = alpha_admin_client.get("/").content.decode()
    assert 'class="usage-chart"' in page and "10.0\xa0GiB quota" in page


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/storage/{pk}/"),
        ("get", "/storage/{pk}/edit/"),
        ("get", "/storage/{pk}/delete/"),
        ("post", "/storage/{pk}/edit/"),
        ("post", "/storage/{pk}/status/"),
        ("post", "/storage/{pk}/probe/"),
        ("post", "/storage/{pk}/delete/"),
    ],
)
def test_guessing_betas_medium_id_from_alpha_is_a_404(
    alpha, beta, alpha_admin_client, beta_medium, method, path
):
    with schema_context(alpha.schema_name):
        assert not StorageMedium.objects.filter(pk=BETA_ID).exists()
    before = media_state(beta)
    data = {"status": "retired", **_form(name="stolen")} if method == "post" else {}
    response = getattr(alpha_admin_client, method)(path.format(pk=BETA_ID), data)
    assert response.status_code == 404
    assert media_state(beta) == before
    assert audit_actions(beta) == []


def test_adding_a_medium_through_the_form(alpha, storage, alpha_admin_client):
    form = alpha_admin_client.get("/storage/new/").content.decode()
    assert "autofocus" in form and str(storage) in form  # the allowed root is explained
    response = alpha_admin_client.post("/storage/new/", _form(capacity_gib="1.5"))
    with schema_context(alpha.schema_name):
        medium = StorageMedium.objects.get(name="disk3")
    assert response.status_code == 302 and response["Location"] == f"/storage/{medium.pk}/"
    assert medium.capacity_bytes == int(1.5 * GIB) and (storage / "disk3").is_dir()
    detail = alpha_admin_client.get(response["Location"]).content.decode()
    assert "Medium “disk3” added" in detail
    assert audit_actions(alpha) == ["medium.create"]


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"root": "../../etc"}, "root", "must lie inside the tenant&#x27;s allowed root"),
        ({"root": "default"}, "root", "is the root of medium “default”"),
        ({"low_watermark": "95"}, "low_watermark", "below the high one"),
        ({"high_watermark": "120"}, "high_watermark", "at most 100 %"),
        ({"capacity_gib": "0"}, "capacity_gib", "more than 0"),
        ({"capacity_gib": "11"}, "capacity_gib", "exceeds the tenant&#x27;s quota of 10.0 GiB"),
        ({"kind": "s3", "bucket": "x"}, "bucket", "3 to 63"),
        ({"name": "DEFAULT"}, "name", "exists already"),
    ],
)
def test_the_form_shows_each_refusal_next_to_its_field(
    alpha, storage, alpha_admin_client, overrides, field, message
):
    before = media_state(alpha)
    response = alpha_admin_client.post("/storage/new/", _form(**overrides))
    assert response.status_code == 200
    assert field in response.context["form"].errors
    page = response.content.decode()
    assert message in page and f'id="id_{field}-error"' in page
    assert media_state(alpha) == before and not (storage / "disk3").exists()


def test_editing_keeps_the_exact_capacity_when_it_is_not_touched(
    alpha, alpha_admin_client, add_medium
):
    medium = add_medium("disk2", capacity_bytes=GIB + 12345)
    form = alpha_admin_client.get(f"/storage/{medium.pk}/edit/").context["form"]
    data = {name: form[name].value() for name in form.fields}
    data.update(priority="7")
    response = alpha_admin_client.post(f"/storage/{medium.pk}/edit/", data)
    assert response.status_code == 302
    with schema_context(alpha.schema_name):
        stored = StorageMedium.objects.get(pk=medium.pk)
    assert (stored.capacity_bytes, stored.priority) == (GIB + 12345, 7)
    assert audit_actions(alpha) == ["medium.create", "medium.update"]


def test_status_buttons_and_the_retire_confirmation(alpha, alpha_admin_client, add_medium):
    medium = add_medium("disk2")
    detail = alpha_admin_client.get(f"/storage/{medium.pk}/").content.decode()
    assert "Set read-only" in detail and "Retire…" in detail
    confirm = alpha_admin_client.get(f"/storage/{medium.pk}/status/?status=retired")
    assert "Retire disk2" in confirm.content.decode()
    alpha_admin_client.post(f"/storage/{medium.pk}/status/", {"status": "read-only"})
    alpha_admin_client.post(f"/storage/{medium.pk}/status/", {"status": "retired"})
    with schema_context(alpha.schema_name):
        assert StorageMedium.objects.get(pk=medium.pk).status == "retired"
    assert audit_actions(alpha)[-2:] == ["medium.status_change", "medium.status_change"]


def test_operators_see_the_media_but_no_buttons(client_as, add_medium):
    medium = add_medium("disk2")
    client = client_as(Role.OPERATOR)
    assert "Add medium" not in client.get("/storage/").content.decode()
    detail = client.get(f"/storage/{medium.pk}/").content.decode()
    assert "disk2" in detail and "Probe now" not in detail and "Delete…" not in detail


def test_probe_swaps_its_result_in_with_htmx_and_works_without_js(
    alpha, alpha_admin_client, add_medium
):
    medium = add_medium("disk2")
    fragment = alpha_admin_client.post(f"/storage/{medium.pk}/probe/", HTTP_HX_REQUEST="true")
    html = fragment.content.decode()
    assert fragment.status_code == 200 and 'id="probe-result"' in html
    assert "Probe passed." in html and "MB/s" in html and "<html" not in html
    plain = alpha_admin_client.post(f"/storage/{medium.pk}/probe/", follow=True)
    assert "Probe passed." in plain.content.decode()
    assert "Last probe passed" in plain.content.decode()
    assert audit_actions(alpha)[-2:] == ["medium.probe", "medium.probe"]


def test_delete_is_refused_while_a_file_exists_and_works_once_empty(
    alpha, alpha_admin_client, add_medium, django_capture_on_commit_callbacks
):
    medium = add_medium("disk2")
    (Path(medium.root) / "1.dcm").write_bytes(b"x" * 10)
    confirm = alpha_admin_client.get(f"/storage/{medium.pk}/delete/").content.decode()
    assert "cannot be deleted" in confirm and "Retire…" in confirm
    refused = alpha_admin_client.post(f"/storage/{medium.pk}/delete/", follow=True)
    assert "holds 1 file (10 bytes); retire it instead" in refused.content.decode()
    with schema_context(alpha.schema_name):
        assert StorageMedium.objects.filter(pk=medium.pk).exists()

    (Path(medium.root) / "1.dcm").unlink()
    with django_capture_on_commit_callbacks(execute=True):
        response = alpha_admin_client.post(f"/storage/{medium.pk}/delete/")
    assert response.status_code == 302 and response["Location"] == "/storage/"
    with schema_context(alpha.schema_name):
        assert not StorageMedium.objects.filter(pk=medium.pk).exists()
    assert not Path(medium.root).exists()
    assert audit_actions(alpha) == ["medium.create", "medium.delete"]


def test_refresh_usage_now_measures_the_files(alpha, alpha_admin_client, add_medium):
    medium = add_medium("disk2")
    (Path(medium.root) / "1.dcm").write_bytes(b"x" * 2048)
    page = alpha_admin_client.post("/storage/refresh/", follow=True).content.decode()
    assert "Usage measured on 2 media: 1 file, 2.0 KiB." in page
    with schema_context(alpha.schema_name):
        stored = StorageMedium.objects.get(pk=medium.pk)
    assert (stored.used_bytes, stored.file_count) == (2048, 1)
    assert audit_actions(alpha) == ["medium.create"]  # measuring changes nothing to audit


def test_the_storage_page_warns_when_the_figures_cannot_all_come_true(alpha, alpha_admin_client):
    from studies.models import StorageMedium

    with schema_context(alpha.schema_name):
        medium = StorageMedium.objects.get(name="default")
        # Allowed more than the tenant's quota, and more than any file system here has free.
        StorageMedium.objects.filter(pk=medium.pk).update(capacity_bytes=alpha.quota_bytes * 1000)
    page = alpha_admin_client.get("/storage/").content.decode()
    assert "% of the tenant&#x27;s quota" in page and "storing stops at the quota" in page
    assert "may still take" in page and "free." in page
