"""The shipped nginx sites in front of a real portal server: routing, headers, limits, static.

Each test renders deploy/nginx/<site>.conf.template for 127.0.0.1 and free ports (as the nginx
image's envsubst would), runs Debian's nginx on it with TLS (a self-signed certificate) and
talks to it with `requests` (verifying that certificate), naming hosts in the Host header.
"""

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from django_tenants.utils import schema_context

from accounts.models import TokenScope, User
from accounts.services import api_token_create
from tenants.models import Tenant
from tests.browser.conftest import TENANT_ADMIN_PASSWORD, public_schema
from tests.deploy.conftest import NGINX_SITES, Proxied

pytestmark = pytest.mark.live

CSRF_RE = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
BIG_BODY_BYTES = 30 * 1024 * 1024


def get(proxied: Proxied, path: str, host: str, session: requests.Session | None = None, **kw):  # type: ignore[no-untyped-def]
    headers = {"Host": proxied.host(host), **kw.pop("headers", {})}
    return (session or requests).get(
        proxied.url(path),
        headers=headers,
        verify=proxied.nginx.certificate,
        allow_redirects=False,
        timeout=30,
        **kw,
    )


def log_in(proxied: Proxied, host: str, prefix: str = "") -> requests.Session:
    """Log the tenant's admin in through nginx, as a browser does (CSRF token and Origin)."""
    session = requests.Session()
    page = get(proxied, f"{prefix}/account/login/", host, session)
    assert page.status_code == 200, page.text[:2000]
    token = CSRF_RE.search(page.text)
    assert token, page.text[:2000]
    response = session.post(
        proxied.url(f"{prefix}/account/login/"),
        data={
            "csrfmiddlewaretoken": token[1],
            "username": "admin",
            "password": TENANT_ADMIN_PASSWORD,
        },
        headers={"Host": proxied.host(host), "Origin": f"https://{proxied.host(host)}"},
        verify=proxied.nginx.certificate,
        allow_redirects=False,
        timeout=30,
    )
    assert response.status_code == 302, response.text[:2000]
    assert response.headers["Location"] == f"{prefix}/"
    return session


def store_token(slug: str, django_db_blocker) -> str:  # type: ignore[no-untyped-def]
    """A committed `store` API token of the tenant's admin."""
    with public_schema(django_db_blocker):
        tenant = Tenant.objects.get(slug=slug)
        with schema_context(tenant.schema_name):
            user = User.objects.get(username="admin")
            _, raw = api_token_create(user=user, name="deploy test", scope=TokenScope.STORE)
    return raw


def stow(proxied: Proxied, path: str, host: str, token: str, *, chunked: bool = False):  # type: ignore[no-untyped-def]
    """POST a 30 MiB STOW-RS body (one part that is not DICOM) through nginx."""
    boundary = "deploy-test-boundary"
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + os.urandom(BIG_BODY_BYTES)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    mib = 1 << 20
    data = iter([body[i : i + mib] for i in range(0, len(body), mib)]) if chunked else body
    return requests.post(
        proxied.url(path),
        data=data,
        headers={
            "Host": proxied.host(host),
            "Authorization": f"Bearer {token}",
            "Accept": "application/dicom+json",
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        },
        verify=proxied.nginx.certificate,
        allow_redirects=False,
        timeout=120,
    )


def assert_answered_by_portal(response: requests.Response) -> None:
    """The portal's STOW-RS answer (nothing stored: the part is not DICOM), not nginx's 413."""
    assert response.status_code != 413, response.text[:500]
    assert response.headers.get("Content-Type", "").startswith("application/dicom+json"), (
        response.status_code,
        response.text[:500],
    )
    assert response.status_code in {200, 202, 400, 409}, response.text[:500]


def assert_static_from_nginx(proxied: Proxied, host: str) -> None:
    """/static/ comes from the directory nginx was given, not from the portal."""
    marker = proxied.nginx.static_root / "deploy-marker.txt"
    marker.write_text("served by nginx\n")
    response = get(proxied, "/static/deploy-marker.txt", host)
    assert response.status_code == 200
    assert response.text == "served by nginx\n"
    css = get(proxied, "/static/portal/portal.css", host)
    assert css.status_code == 200
    assert css.headers["Server"] == "nginx"
    assert css.headers["Content-Type"].startswith("text/css")
    assert css.content == (proxied.nginx.static_root / "portal" / "portal.css").read_bytes()
    assert "max-age=3600" in css.headers.get("Cache-Control", "")
    # The gzipped copy collectstatic made is sent as is (gzip_static).
    gzipped = get(proxied, "/static/portal/portal.css", host, headers={"Accept-Encoding": "gzip"})
    assert gzipped.headers.get("Content-Encoding") == "gzip"
    assert gzipped.content == css.content  # requests decodes it


def assert_links_keep_context(proxied: Proxied, html: str, slug: str) -> None:
    """Every link of a tenant page starts with /<slug>/ (the X-Forwarded-Prefix nginx sent),
    except static files, which are absolute (/static/...) and served by nginx."""
    links = re.findall(r'(?:href|src|action)="(/[^"]*)"', html)
    assert f"/{slug}/" in links, links
    for link in links:
        assert link.startswith((f"/{slug}/", "/static/")), link
    for link in (link for link in links if link.startswith("/static/")):
        assert get(proxied, link.split("?")[0], "localhost").status_code == 200, link


# -- every shipped site is valid nginx ----------------------------------------------------------


@pytest.mark.parametrize("site", NGINX_SITES)
def test_nginx_accepts_the_rendered_site(site: str, nginx_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = nginx_config(site, upstream="127.0.0.1:9", static_root=tmp_path, max_body=20 << 30)
    result = subprocess.run(config.command("-t"), capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    assert "[warn]" not in result.stderr and "[emerg]" not in result.stderr, result.stderr


# -- subdomain site ----------------------------------------------------------------------------


def test_subdomain_site_routes_hosts_to_tenants_over_tls(
    proxied: Proxied, committed_tenant: Callable[[str, str], str]
) -> None:
    slug = committed_tenant("acme", "Acme Deploy Hospital")

    page = get(proxied, "/account/login/", f"{slug}.localhost")
    assert page.status_code == 200, page.text[:2000]
    assert "Log in to Acme Deploy Hospital" in page.text
    assert page.headers["Server"] == "nginx"
    # The portal saw https (X-Forwarded-Proto), so it did not redirect and sets secure cookies.
    assert "Strict-Transport-Security" in page.headers

    platform = get(proxied, "/account/login/", "localhost")
    assert platform.status_code == 200
    assert "Log in to the platform" in platform.text

    session = log_in(proxied, f"{slug}.localhost")
    cookie = next(c for c in session.cookies if c.name == f"portal_session_{slug}")
    assert cookie.secure and cookie.path == "/"
    dashboard = get(proxied, "/", f"{slug}.localhost", session)
    assert dashboard.status_code == 200, dashboard.text[:2000]
    assert "Acme Deploy Hospital" in dashboard.text

    # Plain HTTP is redirected to HTTPS; host names not served get no answer at all.
    redirect = requests.get(
        proxied.url("/studies/?a=1", scheme="http"),
        headers={"Host": f"{slug}.localhost"},
        allow_redirects=False,
        timeout=10,
    )
    assert redirect.status_code == 301
    assert redirect.headers["Location"] == f"https://{slug}.localhost/studies/?a=1"
    with pytest.raises(requests.ConnectionError):
        get(proxied, "/", "elsewhere.example")

    assert get(proxied, "/metrics", "localhost").status_code == 404
    assert_static_from_nginx(proxied, "localhost")


def test_subdomain_site_drops_client_tenant_headers(
    proxied: Proxied, committed_tenant: Callable[[str, str], str]
) -> None:
    slug = committed_tenant("acme", "Acme Deploy Hospital")
    other = committed_tenant("globex", "Globex Deploy Clinic")
    forged = {"X-Tenant": other, "X-Forwarded-Prefix": f"/{other}"}

    # nginx is a trusted proxy: had it passed the header on, the base domain would be Globex's
    # site and the tenant's host a 400 (two selectors). It drops them instead.
    platform = get(proxied, "/account/login/", "localhost", headers=forged)
    assert platform.status_code == 200
    assert "Log in to the platform" in platform.text
    assert "Globex" not in platform.text

    page = get(proxied, "/account/login/", f"{slug}.localhost", headers=forged)
    assert page.status_code == 200, page.text[:2000]
    assert "Acme Deploy Hospital" in page.text and "Globex" not in page.text
    assert f'action="/{other}' not in page.text


def test_subdomain_site_passes_big_uploads_to_the_portal(
    proxied: Proxied,
    committed_tenant: Callable[[str, str], str],
    django_db_blocker,  # type: ignore[no-untyped-def]
) -> None:
    slug = committed_tenant("acme", "Acme Deploy Hospital")
    token = store_token(slug, django_db_blocker)

    assert_answered_by_portal(stow(proxied, "/dicom-web/studies", f"{slug}.localhost", token))
    # A chunked body (no Content-Length) reaches Django with one: nginx buffers it because it
    # speaks HTTP/1.0 to the portal (which would answer 411 to a chunked body).
    chunked = stow(proxied, "/dicom-web/studies", f"{slug}.localhost", token, chunked=True)
    assert_answered_by_portal(chunked)


# -- path site (URL contexts) ------------------------------------------------------------------


@pytest.mark.parametrize("portal_routing", ["path"])
def test_path_site_maps_url_contexts_to_tenants(
    proxied: Proxied, committed_tenant: Callable[[str, str], str]
) -> None:
    slug = committed_tenant("acme", "Acme Deploy Hospital")

    page = get(proxied, f"/{slug}/account/login/", "localhost")
    assert page.status_code == 200, page.text[:2000]
    assert "Log in to Acme Deploy Hospital" in page.text
    # The login form posts back to its own URL, the one with the context.
    assert '<form method="post">' in page.text
    assert_links_keep_context(proxied, page.text, slug)

    session = log_in(proxied, "localhost", prefix=f"/{slug}")
    cookie = next(c for c in session.cookies if c.name == f"portal_session_{slug}")
    assert cookie.path == f"/{slug}/" and cookie.secure
    dashboard = get(proxied, f"/{slug}/", "localhost", session)
    assert dashboard.status_code == 200, dashboard.text[:2000]
    assert "Acme Deploy Hospital" in dashboard.text
    assert f'action="/{slug}/account/logout/"' in dashboard.text
    assert_links_keep_context(proxied, dashboard.text, slug)
    # The login redirects within the context too.
    studies = get(proxied, f"/{slug}/studies/", "localhost")
    assert studies.status_code == 302
    assert studies.headers["Location"].startswith(f"/{slug}/account/login/")

    bare = get(proxied, f"/{slug}", "localhost")
    assert bare.status_code == 301
    assert bare.headers["Location"].endswith(f"/{slug}/")

    # The super-admin site on its own paths, without a tenant.
    platform = get(proxied, "/account/login/", "localhost")
    assert platform.status_code == 200
    assert "Log in to the platform" in platform.text
    fleet = get(proxied, "/tenants/", "localhost")
    assert fleet.status_code == 302
    assert fleet.headers["Location"].startswith("/account/login/")
    unknown = get(proxied, "/no-such-tenant/account/login/", "localhost")
    assert unknown.status_code == 404

    assert get(proxied, "/metrics", "localhost").status_code == 404
    assert get(proxied, f"/{slug}/metrics", "localhost").status_code == 404
    assert_static_from_nginx(proxied, "localhost")


@pytest.mark.parametrize("portal_routing", ["path"])
def test_path_site_overwrites_client_tenant_headers(
    proxied: Proxied, committed_tenant: Callable[[str, str], str]
) -> None:
    slug = committed_tenant("acme", "Acme Deploy Hospital")
    other = committed_tenant("globex", "Globex Deploy Clinic")
    forged = {"X-Tenant": other, "X-Forwarded-Prefix": f"/{other}"}

    page = get(proxied, f"/{slug}/account/login/", "localhost", headers=forged)
    assert page.status_code == 200, page.text[:2000]
    assert "Acme Deploy Hospital" in page.text and "Globex" not in page.text
    assert f'href="/{slug}/"' in page.text and f'"/{other}/' not in page.text

    # On the super-admin site's paths nginx clears them (they would select Globex otherwise).
    platform = get(proxied, "/account/login/", "localhost", headers=forged)
    assert platform.status_code == 200
    assert "Log in to the platform" in platform.text and "Globex" not in platform.text


@pytest.mark.parametrize("portal_routing", ["path"])
def test_path_site_passes_big_uploads_to_the_portal(
    proxied: Proxied,
    committed_tenant: Callable[[str, str], str],
    django_db_blocker,  # type: ignore[no-untyped-def]
) -> None:
    slug = committed_tenant("acme", "Acme Deploy Hospital")
    token = store_token(slug, django_db_blocker)

    assert_answered_by_portal(stow(proxied, f"/{slug}/dicom-web/studies", "localhost", token))
