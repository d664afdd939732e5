"""Fixtures for the deployment tests: the portal as its own server behind a real nginx.

The portal server is started by tests/browser's `running_portal` (`manage.py runserver`
against the test database), but with tests/deploy/proxy_settings.py:
tests/settings.py pins PORTAL_TRUSTED_PROXIES, and `live_portal` pins that settings module,
so the proxy could not be trusted otherwise. The fixture keeps the name `live_portal`, so
tests/browser's `committed_tenant` (imported below) purges its tenants with this server.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.browser.conftest import (  # noqa: F401 - fixtures and the report hook are reused
    PROJECT_ROOT,
    LiveServer,
    _free_port,
    committed_tenant,
    public_schema,
    purge_tenants_after,
    pytest_runtest_makereport,
    running_portal,
)
from tests.conftest import require_tool

NGINX = "/usr/sbin/nginx"
DEPLOY = PROJECT_ROOT / "deploy"
NGINX_SITES = ("subdomain", "path")
# Upper-case ${NAME}: what the official nginx image's envsubst fills in from the environment.
TEMPLATE_VARIABLE_RE = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


@pytest.fixture
def portal_routing() -> str:
    """PORTAL_TENANT_ROUTING of the server, and the nginx site in front of it; a test picks
    the other with `@pytest.mark.parametrize("portal_routing", ["path"])`."""
    return "subdomain"


@pytest.fixture
def live_portal(
    request: pytest.FixtureRequest, django_db_setup: None, tmp_path: Path, portal_routing: str
) -> Iterator[LiveServer]:
    """`manage.py runserver` on a free port against the test database, as tests/browser's
    fixture of this name, with proxy_settings: routing `portal_routing`, nginx on loopback
    trusted. (Other fixtures, e.g. `committed_tenant`, may start it before the test body.)"""
    with running_portal(
        request,
        tmp_path / "server.log",
        settings_module="tests.deploy.proxy_settings",
        url_host="127.0.0.1",
        unset=("PORTAL_URL_PORT",),  # links go through nginx, whose port this is not
        PORTAL_URL_SCHEME="https",
        PORTAL_TENANT_ROUTING=portal_routing,
        PORTAL_TRUSTED_PROXIES="127.0.0.1/32",
    ) as server:
        yield server


def render_template(name: str, values: dict[str, str]) -> str:
    """deploy/nginx/<name>.conf.template with its ${VARIABLES} filled in, as the nginx image's
    envsubst does (only names that are defined; nginx's lower-case $variables stay)."""
    text = (DEPLOY / "nginx" / f"{name}.conf.template").read_text()
    rendered = TEMPLATE_VARIABLE_RE.sub(lambda m: values.get(m[1], m[0]), text)
    code = "\n".join(line.split("#", 1)[0] for line in rendered.splitlines())
    assert "${" not in code, f"{name}: unfilled variables in\n{rendered}"
    return rendered


@pytest.fixture(scope="session")
def tls_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost, *.localhost and 127.0.0.1 (the tests connect
    to the address and name the host in the Host header): (fullchain.pem, privkey.pem)."""
    require_tool("openssl", "openssl")
    directory = tmp_path_factory.mktemp("certs")
    chain, key = directory / "fullchain.pem", directory / "privkey.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,DNS:*.localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(chain),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return chain, key


@pytest.fixture(scope="session")
def collected_static(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`manage.py collectstatic` as the image runs it (production storage: gzipped copies
    beside the files), into a directory of its own."""
    from django.conf import settings
    from django.core.management import call_command
    from django.test import override_settings

    directory = tmp_path_factory.mktemp("static")
    storages = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
    }
    with override_settings(STATIC_ROOT=directory, STORAGES=storages):
        call_command("collectstatic", interactive=False, verbosity=0)
    return directory


@dataclass(frozen=True)
class NginxConfig:
    """A shipped site rendered into a directory of its own, with a main nginx.conf."""

    directory: Path
    http_port: int
    https_port: int
    static_root: Path

    @property
    def main(self) -> Path:
        return self.directory / "nginx.conf"

    @property
    def error_log(self) -> Path:
        return self.directory / "error.log"

    def command(self, *args: str) -> list[str]:
        prefix = f"{self.directory}/"
        return [NGINX, "-c", str(self.main), "-p", prefix, "-e", str(self.error_log), *args]

    @property
    def certificate(self) -> str:
        """The self-signed certificate, for `requests`' verify= (it names 127.0.0.1 too)."""
        return str(self.directory / "certs" / "fullchain.pem")


@pytest.fixture
def nginx_config(
    tmp_path_factory: pytest.TempPathFactory, tls_certificate: tuple[Path, Path]
) -> Callable[..., NginxConfig]:
    """Render a shipped site for 127.0.0.1 and free ports, beside the snippets and certs it
    includes (relative paths below the configuration directory, as /etc/nginx/ in the image)."""
    require_tool(NGINX, "nginx")

    def make(site: str, *, upstream: str, static_root: Path, max_body: int) -> NginxConfig:
        directory = tmp_path_factory.mktemp(f"nginx-{site}")
        http_port, https_port = _free_port(), _free_port()
        shutil.copytree(DEPLOY / "nginx" / "snippets", directory / "snippets")
        (directory / "certs").mkdir()
        for source in tls_certificate:
            shutil.copy(source, directory / "certs" / source.name)
        (directory / "conf.d").mkdir()
        site_conf = render_template(
            site,
            {
                "PORTAL_BASE_DOMAIN": "localhost",
                "PORTAL_MAX_UPLOAD_BYTES": str(max_body),
                "NGINX_UPSTREAM": upstream,
                "NGINX_RESOLVER": "127.0.0.1",
                "NGINX_LISTEN_HTTP": f"127.0.0.1:{http_port}",
                "NGINX_LISTEN_HTTPS": f"127.0.0.1:{https_port}",
                "NGINX_STATIC_ROOT": str(static_root),
            },
        )
        (directory / "conf.d" / "default.conf").write_text(site_conf)
        # The main file stands in for the image's /etc/nginx/nginx.conf: everything in the
        # test's directory, in the foreground; workers as this user (root under CI).
        user = "user root;" if os.geteuid() == 0 else ""
        (directory / "nginx.conf").write_text(
            f"""{user}
daemon off;
worker_processes 1;
pid {directory}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {directory}/access.log;
    client_body_temp_path {directory}/client_body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    include {directory}/conf.d/*.conf;
}}
"""
        )
        return NginxConfig(directory, http_port, https_port, static_root)

    return make


@dataclass(frozen=True)
class Proxied:
    """nginx with a shipped site in front of a portal server."""

    portal: LiveServer
    nginx: NginxConfig

    def url(self, path: str, *, scheme: str = "https") -> str:
        port = self.nginx.https_port if scheme == "https" else self.nginx.http_port
        return f"{scheme}://127.0.0.1:{port}{path}"

    def host(self, name: str = "localhost") -> str:
        """A Host header as a browser sends it to this nginx (with the port)."""
        return f"{name}:{self.nginx.https_port}"


@pytest.fixture
def proxied(
    request: pytest.FixtureRequest,
    portal_routing: str,
    live_portal: LiveServer,
    nginx_config: Callable[..., NginxConfig],
    tmp_path: Path,
) -> Iterator[Proxied]:
    """nginx with the site of `portal_routing` in front of the portal server; its static
    root is a copy of `collected_static` (tests may add files)."""
    from django.conf import settings

    static_root = tmp_path / "static"
    shutil.copytree(request.getfixturevalue("collected_static"), static_root)
    config = nginx_config(
        portal_routing,
        upstream=f"127.0.0.1:{live_portal.port}",
        static_root=static_root,
        max_body=settings.PORTAL_MAX_UPLOAD_BYTES,
    )
    with (config.directory / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen(config.command(), stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        _wait_for_nginx(config, process)
        yield Proxied(portal=live_portal, nginx=config)
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful: the workers finish and exit
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed and config.error_log.exists():
            print(f"--- nginx error log ---\n{config.error_log.read_text(errors='replace')}")


def _wait_for_nginx(config: NginxConfig, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            logs = [config.directory / "stderr.log", config.error_log]
            text = "\n".join(p.read_text(errors="replace") for p in logs if p.exists())
            pytest.fail(f"nginx exited with {process.returncode}:\n{text}")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", config.https_port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"nginx did not listen on {config.https_port} within 10 s")
