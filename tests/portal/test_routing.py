"""Tenant selection: subdomain and path modes, trusted X-Tenant, abuse, cookies per tenant."""

import pytest
from django.test import Client, override_settings

from tenants import services
from tests.conftest import PASSWORD, logged_in, tenant_client

TRUSTED = "10.9.8.7"  # PORTAL_TRUSTED_PROXIES in tests/settings.py
path_mode = override_settings(PORTAL_TENANT_ROUTING="path")


def brand(response) -> str:
    """The site name the header shows: tells which tenant (or the platform) answered."""
    html = response.content.decode()
    start = html.index('class="brand"')
    return html[html.index(">", start) + 1 : html.index("</a>", start)]


def test_subdomain_selects_tenant_and_base_domain_is_the_platform(alpha, beta):
    assert brand(tenant_client(alpha).get("/account/login/")) == "Alpha Hospital"
    assert brand(tenant_client(beta).get("/account/login/")) == "Beta Hospital"
    assert brand(Client(HTTP_HOST="localhost").get("/account/login/")) == "PACS portal · Platform"


def test_unknown_host_and_unknown_tenant_are_404_pages(db):
    response = Client(HTTP_HOST="nobody.localhost").get("/")
    assert response.status_code == 404
    assert b"No tenant is served at this address" in response.content
    assert Client(HTTP_HOST="evil.example").get("/").status_code == 400  # not an allowed host


def test_suspended_tenant_gets_a_403_page_saying_so(alpha, alpha_admin):
    client = logged_in(tenant_client(alpha), alpha_admin.username)
    services.tenant_suspend(tenant=alpha, actor="ops")
    response = client.get("/")
    assert response.status_code == 403
    assert b"Alpha Hospital is suspended" in response.content
    assert (
        tenant_client(alpha)
        .post("/account/login/", {"username": alpha_admin.username, "password": PASSWORD})
        .status_code
        == 403
    )


def test_deleted_tenant_is_gone(alpha):
    services.tenant_delete(tenant=alpha, actor="ops", confirm_slug="alpha")
    assert tenant_client(alpha).get("/account/login/").status_code == 404


@path_mode
def test_path_mode_routes_by_prefix_and_links_keep_it(alpha, alpha_admin):
    client = Client(HTTP_HOST="localhost")
    response = client.get("/t/alpha/")
    assert response.status_code == 302
    assert response["Location"] == "/t/alpha/account/login/?next=/t/alpha/"
    response = client.post(
        "/t/alpha/account/login/", {"username": alpha_admin.username, "password": PASSWORD}
    )
    assert response.status_code == 302 and response["Location"] == "/t/alpha/"
    cookie = response.cookies["portal_session_alpha"]
    assert cookie["path"] == "/t/alpha/" and cookie["httponly"]
    page = client.get("/t/alpha/")
    assert brand(page) == "Alpha Hospital"
    assert 'href="/t/alpha/account/"' in page.content.decode()
    assert client.get("/t/alpha").status_code == 301  # adds the slash
    assert client.get("/tenants/").status_code == 302  # the platform stays on the bare paths


@path_mode
def test_path_mode_ignores_subdomains(alpha):
    assert (
        Client(HTTP_HOST="alpha.localhost").get("/account/login/").status_code == 404
        or brand(Client(HTTP_HOST="alpha.localhost").get("/account/login/")) != "Alpha Hospital"
    )


def test_x_tenant_from_a_trusted_proxy_selects_the_tenant_and_prefix(alpha):
    client = Client(HTTP_HOST="localhost", REMOTE_ADDR=TRUSTED)
    response = client.get("/", HTTP_X_TENANT="alpha", HTTP_X_FORWARDED_PREFIX="/alpha/pacs")
    assert response.status_code == 302
    assert response["Location"] == "/alpha/pacs/account/login/?next=/alpha/pacs/"
    page = client.get("/account/login/", HTTP_X_TENANT="alpha")
    assert brand(page) == "Alpha Hospital"


def test_x_tenant_from_an_untrusted_address_is_ignored(alpha, caplog):
    response = Client(HTTP_HOST="localhost").get("/account/login/", HTTP_X_TENANT="alpha")
    assert brand(response) == "PACS portal · Platform"
    assert "ignoring X-Tenant" in caplog.text


@override_settings(
    SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"), SECURE_SSL_REDIRECT=True
)
def test_the_https_header_counts_only_from_a_trusted_proxy(alpha, caplog):
    """A client that claims https itself is sent to https; the proxy's word is taken."""
    untrusted = Client(HTTP_HOST="alpha.localhost", REMOTE_ADDR="198.51.100.7")
    response = untrusted.get("/account/login/", HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 301
    assert response["Location"] == "https://alpha.localhost/account/login/"
    assert "ignoring HTTP_X_FORWARDED_PROTO from untrusted 198.51.100.7" in caplog.text
    proxied = Client(HTTP_HOST="alpha.localhost", REMOTE_ADDR=TRUSTED)
    response = proxied.get("/account/login/", HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 200 and brand(response) == "Alpha Hospital"


def test_conflicting_selectors_are_refused(alpha, beta):
    client = Client(HTTP_HOST="alpha.localhost", REMOTE_ADDR=TRUSTED)
    response = client.get("/account/login/", HTTP_X_TENANT="beta")
    assert response.status_code == 400
    assert b"more than one tenant" in response.content
    with path_mode:
        response = Client(HTTP_HOST="localhost", REMOTE_ADDR=TRUSTED).get(
            "/t/alpha/", HTTP_X_TENANT="beta"
        )
        assert response.status_code == 400


ABUSE = [
    # (mode, host, path, X-Tenant header from the trusted proxy or None)
    ("subdomain", "alpha..localhost", "/", None),
    ("subdomain", "a1pha.localhost", "/", None),
    ("subdomain", "xn--lpha-0ra.localhost", "/", None),
    ("subdomain", "alpha.localhost:99999", "/", None),
    ("subdomain", "beta.alpha.localhost", "/", None),
    ("subdomain", "localhost", "/", "ALPHA"),
    ("subdomain", "localhost", "/", "../alpha"),
    ("subdomain", "localhost", "/", "alpha/"),
    ("subdomain", "localhost", "/", "public"),
    ("subdomain", "localhost", "/", "t_alpha"),
    ("subdomain", "localhost", "/", ""),
    ("path", "localhost", "/t/ALPHA/", None),
    ("path", "localhost", "/t/../t/alpha/", None),
    ("path", "localhost", "/t/alpha%2F..%2Fbeta/", None),
    ("path", "localhost", "/t/%2E%2E/", None),
    ("path", "localhost", "/t/al%70ha-/", None),
    ("path", "localhost", "/t/public/", None),
    ("path", "localhost", "/t/t_alpha/", None),
    ("path", "localhost", "/t//alpha/", None),
    ("path", "localhost", "/t/alpha\u200b/", None),
]


@pytest.mark.parametrize(("mode", "host", "path", "header"), ABUSE)
def test_selector_abuse_is_400_or_404_never_the_wrong_tenant(alpha, beta, mode, host, path, header):
    extra = {"HTTP_X_TENANT": header} if header is not None else {}
    with override_settings(PORTAL_TENANT_ROUTING=mode):
        response = Client(HTTP_HOST=host, REMOTE_ADDR=TRUSTED).get(path, **extra)
    assert response.status_code in {301, 302, 400, 404}, response.status_code
    if response.status_code in {301, 302}:
        # A redirect may only normalise within the same tenant, never hop to another one.
        assert "beta" not in response["Location"]
    else:
        assert b"Beta Hospital" not in response.content


@pytest.mark.parametrize("host", ["ALPHA.localhost", "Alpha.LocalHost", "alpha.localhost."])
def test_host_names_are_case_insensitive_as_in_dns(alpha, host):
    assert brand(Client(HTTP_HOST=host).get("/account/login/")) == "Alpha Hospital"


def test_session_of_tenant_a_does_not_authenticate_in_tenant_b(alpha, beta, make_user):
    alice = make_user(alpha, username="shared-name")
    make_user(beta, username="shared-name")  # same username, unrelated account
    client = logged_in(tenant_client(alpha), alice.username)
    session_value = client.cookies["portal_session_alpha"].value

    # The same cookie value replayed to beta, under beta's cookie name: no session there.
    intruder = tenant_client(beta)
    intruder.cookies["portal_session_beta"] = session_value
    response = intruder.get("/")
    assert response.status_code == 302 and "/account/login/" in response["Location"]
    # And under the generic name the platform uses: ignored by tenants.
    intruder.cookies["portal_session"] = session_value
    assert intruder.get("/").status_code == 302


@path_mode
def test_path_mode_session_cookie_is_scoped_to_its_tenant(alpha, beta, make_user):
    alice = make_user(alpha, username="pathuser")
    make_user(beta, username="pathuser")
    client = Client(HTTP_HOST="localhost")
    logged_in(client, alice.username, prefix="/t/alpha")
    assert client.get("/t/alpha/").status_code == 200
    # The test client sends every cookie regardless of path; the name still keeps them apart.
    response = client.get("/t/beta/")
    assert response.status_code == 302 and response["Location"].startswith("/t/beta/account/")


def test_superadmin_cannot_log_into_a_tenant_and_tenant_admin_not_into_the_platform(
    alpha, superadmin, alpha_admin
):
    refused = tenant_client(alpha).post(
        "/account/login/", {"username": superadmin.username, "password": PASSWORD}
    )
    assert refused.status_code == 200 and b"Please enter a correct" in refused.content
    refused = Client(HTTP_HOST="localhost").post(
        "/account/login/", {"username": alpha_admin.username, "password": PASSWORD}
    )
    assert refused.status_code == 200 and b"Please enter a correct" in refused.content


def test_superadmin_session_cookie_is_useless_on_a_tenant(alpha, superadmin_client):
    value = superadmin_client.cookies["portal_session"].value
    client = tenant_client(alpha)
    client.cookies["portal_session_alpha"] = value
    response = client.get("/")
    assert response.status_code == 302 and "/account/login/" in response["Location"]
