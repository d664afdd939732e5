"""The viewer in the box: its pinned files, its page and per-tenant configuration, the links."""

import base64
import hashlib
import io
import json
import re
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client, override_settings
from django_tenants.utils import schema_context
from pydicom.uid import generate_uid

from accounts.models import Role
from configuration.models import TenantSettings
from studies.viewer import bundle
from studies.viewer.links import viewer_url
from studies.viewer.views import viewer_root
from tests.conftest import logged_in, tenant_client
from tests.studies.index.test_study_pages import dicom, store

INDEX = (
    '<!doctype html><html><head><script>console.time("x"),window.PUBLIC_URL="/"</script>'
    '<link rel="manifest" href="/manifest.json">'
    '<script rel="preload" as="script" src="/app-config.js"></script>'
    '<script rel="preload" as="script" type="module" src="/init-service-worker.js"></script>'
    '<script>function browserImportFunction(n){return import(n)}window.PUBLIC_URL="/"</script>'
    '<script defer src="/app.bundle.js"></script></head><body></body></html>'
)
BUNDLE = 'var p; (() => { __webpack_require__.p = "/"; })();'


def tarball(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A registry on 127.0.0.1 serving files from a directory; an empty cache."""
    served = tmp_path / "registry"
    package = served / "@ohif" / "app" / "-"
    package.mkdir(parents=True)
    monkeypatch.setenv("PORTAL_CACHE_DIR", str(tmp_path / "cache"))
    handler = partial(SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(bundle, "DEFAULT_REGISTRY", f"http://127.0.0.1:{server.server_address[1]}")
    yield package / f"app-{bundle.OHIF_VERSION}.tgz"
    server.shutdown()


def test_install_fetches_checks_and_makes_the_files_servable_below_any_path(
    registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tarball(
        {
            "package/package.json": b"{}",
            "package/dist/index.html": INDEX.encode(),
            "package/dist/app.bundle.js": BUNDLE.encode(),
            "package/dist/../../escape.txt": b"outside",
        }
    )
    registry.write_bytes(data)
    monkeypatch.setattr(bundle, "OHIF_INTEGRITY", integrity(data))
    root = tmp_path / "viewer"
    with pytest.raises(bundle.BundleError, match="cannot be unpacked safely"):
        bundle.install(root)
    assert not root.exists() and not (tmp_path / "escape.txt").exists()

    data = tarball(
        {
            "package/dist/index.html": INDEX.encode(),
            "package/dist/app.bundle.js": BUNDLE.encode(),
            "package/README.md": b"not served",
        }
    )
    registry.write_bytes(data)
    monkeypatch.setattr(bundle, "OHIF_INTEGRITY", integrity(data))
    assert bundle.install(root) is True
    assert bundle.installed_version(root) == bundle.OHIF_VERSION
    assert bundle.install(root) is False  # already there: nothing fetched or rewritten
    assert sorted(p.name for p in root.iterdir()) == [
        "app.bundle.js",
        bundle.TEMPLATE,
        bundle.MARKER,
    ]
    assert "window.PUBLIC_URL" in (root / "app.bundle.js").read_text()
    page = bundle.index_html(
        root, config_url="/t/a/viewer/app-config.js", assets_url="/static/viewer/"
    )
    assert "<script>" not in page  # no inline script: the page's policy forbids it
    assert "init-service-worker" not in page  # it imports from a CDN
    assert '<script src="/t/a/viewer/app-config.js"></script>' in page
    assert 'src="/static/viewer/app.bundle.js"' in page
    assert 'href="/static/viewer/manifest.json"' in page
    assert not re.search(r'(?:src|href)="/(?!static/viewer/|t/a/viewer/app-config)', page)


def test_a_tarball_that_is_not_the_pinned_one_is_refused_and_not_kept(
    registry: Path, tmp_path: Path
) -> None:
    registry.write_bytes(tarball({"package/dist/index.html": b"<html>evil</html>"}))
    root = tmp_path / "viewer"
    assert bundle.main([str(root)]) == 1
    assert not root.exists()
    assert not any((tmp_path / "cache").iterdir())


def test_the_installed_viewer_is_the_pinned_release() -> None:
    root = viewer_root()
    assert root is not None, "`make install` fetches the viewer"
    marker = json.loads((root / bundle.MARKER).read_text())
    assert marker == {
        "package": "@ohif/app",
        "version": bundle.OHIF_VERSION,
        "integrity": bundle.OHIF_INTEGRITY,
        "layout": bundle.LAYOUT,
    }
    page = bundle.index_html(root, config_url="/viewer/app-config.js", assets_url="/static/viewer/")
    assert "http://" not in page.replace('xmlns="http://', "") and "https://" not in page
    for asset in re.findall(r'(?:src|href)="/static/viewer/([^"]+)"', page):
        assert (root / asset).is_file(), asset


def test_the_page_has_its_own_policy_still_without_inline_script(alpha, client_as) -> None:
    response = client_as(Role.VIEWER).get("/viewer/")
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    policy = dict(
        d.strip().split(" ", 1) for d in response["Content-Security-Policy"].split(";") if d.strip()
    )
    assert policy["script-src"] == "'self' 'wasm-unsafe-eval'"
    assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    page = response.content.decode()
    assert '<script src="/viewer/app-config.js"></script>' in page
    # OHIF's routes are the browser's: every path below /viewer/ is the same page.
    assert client_as(Role.VIEWER).get("/viewer/viewer/deep/route").content.decode() == page


def test_the_files_are_served_below_static(alpha) -> None:
    root = viewer_root()
    assert root is not None
    script = next(root.glob("app.bundle.*.js"))
    response = tenant_client(alpha).get(f"/static/viewer/{script.name}")
    assert response.status_code == 200
    assert b"window.PUBLIC_URL" in b"".join(response.streaming_content)  # type: ignore[attr-defined]


def test_each_tenants_config_names_its_own_archive_only(alpha, beta, client_as) -> None:
    for tenant, other in ((alpha, beta), (beta, alpha)):
        response = client_as(Role.VIEWER, tenant).get("/viewer/app-config.js")
        assert response.status_code == 200
        assert response["Content-Type"] == "text/javascript; charset=utf-8"
        script = response.content.decode()
        assert 'window.PUBLIC_URL = "/static/viewer/";' in script
        config = json.loads(script.split("window.config = ", 1)[1].rstrip().rstrip(";"))
        assert config["routerBasename"] == "/viewer"
        [source] = config["dataSources"]
        roots = source["configuration"]
        assert roots["qidoRoot"] == roots["wadoRoot"] == f"http://{tenant.slug}.localhost/dicom-web"
        assert other.slug not in script
        assert "pp_" not in script and "Bearer" not in script


@override_settings(PORTAL_TENANT_ROUTING="path")
def test_path_mode_keeps_the_tenant_prefix(alpha, make_user) -> None:
    user = make_user(alpha, role=Role.VIEWER)
    client = logged_in(Client(HTTP_HOST="localhost"), user.username, prefix="/t/alpha")
    page = client.get("/t/alpha/viewer/").content.decode()
    assert '<script src="/t/alpha/viewer/app-config.js"></script>' in page
    script = client.get("/t/alpha/viewer/app-config.js").content.decode()
    assert '"routerBasename": "/t/alpha/viewer"' in script
    assert '"qidoRoot": "http://localhost/t/alpha/dicom-web"' in script


@pytest.mark.parametrize("path", ["/viewer/", "/viewer/app-config.js"])
def test_only_users_who_may_see_studies_get_the_viewer(alpha, client_as, path: str) -> None:
    assert client_as(Role.AUDITOR).get(path).status_code == 403
    anonymous = tenant_client(alpha).get(path)
    assert anonymous.status_code == 302 and "/account/login/" in anonymous["Location"]


def test_without_its_files_the_page_says_how_to_install_them(alpha, client_as, tmp_path) -> None:
    with override_settings(PORTAL_VIEWER_ROOT=tmp_path):
        response = client_as(Role.ADMIN).get("/viewer/")
    assert response.status_code == 503
    page = response.content.decode()
    assert "make install" in page and str(tmp_path) in page
    with override_settings(PORTAL_VIEWER_ROOT=tmp_path):
        operator = client_as(Role.OPERATOR).get("/viewer/").content.decode()
    assert str(tmp_path) not in operator  # server paths only for who runs the server


def test_study_and_series_pages_open_the_viewer(alpha, client_as, storage) -> None:
    study, series = generate_uid(), generate_uid()
    store(alpha, dicom(StudyInstanceUID=study, SeriesInstanceUID=series))
    client = client_as(Role.VIEWER)
    page = client.get(f"/studies/{study}/").content.decode()
    assert f'href="/viewer/viewer?StudyInstanceUIDs={study}"' in page
    assert f"StudyInstanceUIDs={study}&amp;initialSeriesInstanceUID={series}" in page
    series_page = client.get(f"/studies/{study}/series/{series}/").content.decode()
    assert f"StudyInstanceUIDs={study}&amp;initialSeriesInstanceUID={series}" in series_page

    with schema_context(alpha.schema_name):
        TenantSettings.objects.update(
            viewer_url_template="https://rad.example/view?study={study_uid}&series={series_uid}"
        )
    page = client.get(f"/studies/{study}/").content.decode()
    assert f'href="https://rad.example/view?study={study}&amp;series="' in page
    assert f"https://rad.example/view?study={study}&amp;series={series}" in page


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("javascript:alert(1)//{study_uid}", "http or https"),
        ("https://v.example/{study_uid} x", "http or https"),
        ("https://v.example/view", "must contain {study_uid}"),
        ("https://v.example/{patient_id}/{study_uid}", "{patient_id} cannot"),
        ("https://v.example/{study_uid!r}", "a format or conversion"),
        ("https://v.example/{study_uid", "Braces"),
    ],
)
def test_another_viewers_url_is_checked(alpha_admin_client, template: str, reason: str) -> None:
    response = alpha_admin_client.post(
        "/settings/", {"section": "viewer", "viewer-viewer_url_template": template}
    )
    assert response.status_code == 200
    assert reason in response.content.decode().replace("&#x27;", "'")


def test_another_viewers_url_is_saved_and_audited(alpha, alpha_admin_client) -> None:
    template = "https://viewer.example.org/viewer?StudyInstanceUIDs={study_uid}"
    response = alpha_admin_client.post(
        "/settings/", {"section": "viewer", "viewer-viewer_url_template": template}
    )
    assert response.status_code == 302
    with schema_context(alpha.schema_name):
        assert TenantSettings.objects.get().viewer_url_template == template
        assert viewer_url("1.2.3") == "https://viewer.example.org/viewer?StudyInstanceUIDs=1.2.3"
        from configuration.models import SettingChange

        assert SettingChange.objects.filter(field="viewer_url_template").exists()


def test_the_built_in_viewer_is_the_default(alpha) -> None:
    with schema_context(alpha.schema_name):
        assert viewer_url("1.2.3", "1.2.3.4") == (
            "/viewer/viewer?StudyInstanceUIDs=1.2.3&initialSeriesInstanceUID=1.2.3.4"
        )
    assert Path(settings.PORTAL_VIEWER_ROOT).name == "viewer"


def test_the_readme_names_the_pinned_release() -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    assert f"`@ohif/app` {bundle.OHIF_VERSION}" in readme
    assert "| `PORTAL_VIEWER_ROOT` | `.var/viewer` |" in readme
    assert Path(settings.PORTAL_VIEWER_ROOT) == Path(settings.BASE_DIR) / ".var" / "viewer"
