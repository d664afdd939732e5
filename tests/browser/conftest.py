"""Fixtures for browser tests: the portal as its own server process, and Debian's chromium.

The server runs against pytest-django's test database (migrated by `django_db_setup`), so
rows the fixtures commit through `django_db_blocker` are what the browser sees, and what
the browser creates can be cleaned up from here.
"""

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.db import connection
from django.test import override_settings
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, sync_playwright

from accounts.models import User
from accounts.services import user_create
from tenants.models import Tenant, TenantStatus
from tenants.services import tenant_delete, tenant_purge
from tests.conftest import test_database_url

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STARTUP_SECONDS = 30


@dataclass(frozen=True)
class LiveServer:
    """A running portal: its port, its base URL and where its storage root lies."""

    port: int
    url: str
    storage_root: Path

    def tenant_url(self, slug: str) -> str:
        return f"http://{slug}.localhost:{self.port}"


@contextmanager
def public_schema(django_db_blocker) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Committed (autocommit) queries on the public schema from a fixture.

    Playwright's sync API keeps an event loop on this thread, and Django refuses queries
    when it sees one; these are plain synchronous calls, so the check is lifted meanwhile.
    """
    with django_db_blocker.unblock(), pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        connection.set_schema_to_public()
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Keep each phase's report on the item, so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_test_database_url = test_database_url


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"the portal server exited with {process.returncode}:\n"
                f"{log.read_text(errors='replace')}"
            )
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(
        f"the portal server did not answer on port {port} within {STARTUP_SECONDS} s:\n"
        f"{log.read_text(errors='replace')}"
    )


@contextmanager
def running_portal(
    request: pytest.FixtureRequest,
    log: Path,
    *,
    settings_module: str = "tests.settings",
    url_host: str = "localhost",
    unset: tuple[str, ...] = (),
    **environment: str,
) -> Iterator[LiveServer]:
    """`manage.py runserver` on a free port against the test database; stopped afterwards.

    Its stderr goes to `log`, printed when the test fails. It inherits PORTAL_STORAGE_ROOT
    from this process (tests/settings.py exports it), so both agree on where tenant files
    live; `environment` adds or overrides variables (routing mode, trusted proxies, ...).
    """
    from django.conf import settings

    port = _free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": settings_module,
        "DATABASE_URL": _test_database_url(),
        "PORTAL_URL_PORT": str(port),
        "PORTAL_URL_SCHEME": "http",
        "DEBUG": "false",
        "PORTAL_STORAGE_ROOT": str(settings.PORTAL_STORAGE_ROOT),
        "PYTHONUNBUFFERED": "1",
        **environment,
    }
    for name in unset:
        env.pop(name, None)
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        _wait_for_port(port, process, log)
        yield LiveServer(
            port=port,
            url=f"http://{url_host}:{port}",
            storage_root=Path(settings.PORTAL_STORAGE_ROOT),
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            print(f"--- portal server log ({log}) ---\n{log.read_text(errors='replace')}")


@pytest.fixture
def live_portal(
    request: pytest.FixtureRequest, django_db_setup: None, tmp_path: Path
) -> Iterator[LiveServer]:
    """The portal as its own server process (`running_portal`), in the test's routing mode."""
    with running_portal(request, tmp_path / "server.log") as server:
        yield server


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless. Missing: a skip by hand, a failure under CI."""
    if not os.path.exists(CHROMIUM):
        reason = f"chromium is not installed ({CHROMIUM}); `apt-get install chromium`"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()
    finally:
        playwright.stop()


class ContextFactory:
    """Makes fresh browser contexts (own cookies each) and keeps every message in which the
    browser refused something under the Content-Security-Policy."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[BrowserContext] = []
        self.csp_violations: list[str] = []

    def __call__(self) -> BrowserContext:
        context = self.browser.new_context()
        context.on("console", self._console)
        self.contexts.append(context)
        return context

    def _console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.csp_violations.append(f"{message.location.get('url', '?')}: {message.text}")


@pytest.fixture
def new_context(browser: Browser) -> Iterator[ContextFactory]:
    """Fresh browser contexts, all closed after the test. Every browser test is also a test of
    the Content-Security-Policy: a page of ours that the policy breaks fails it."""
    factory = ContextFactory(browser)
    yield factory
    for context in factory.contexts:
        context.close()
    assert not factory.csp_violations, "\n".join(factory.csp_violations)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


@pytest.fixture
def superadmin(django_db_setup: None, django_db_blocker) -> Credentials:  # type: ignore[no-untyped-def]
    """A super-admin committed to the test database's public schema, new for each run."""
    credentials = Credentials(
        username=f"browser-root-{uuid.uuid4().hex[:8]}", password="Granite-Otter-5821-meadow"
    )
    with public_schema(django_db_blocker):
        if not User.objects.filter(username=credentials.username).exists():
            user_create(
                username=credentials.username,
                email="root@platform.example",
                password=credentials.password,
                is_superuser=True,
            )
    return credentials


@pytest.fixture
def purge_tenants_after(live_portal: LiveServer, django_db_blocker) -> Iterator[list[str]]:  # type: ignore[no-untyped-def]
    """Slugs appended to this list are deleted and purged after the test, if they exist.

    The server made their storage directories under its own storage root, so the purge runs
    with that root (the purge refuses to touch anything outside PORTAL_STORAGE_ROOT).
    """
    slugs: list[str] = []
    yield slugs
    with (
        public_schema(django_db_blocker),
        override_settings(PORTAL_STORAGE_ROOT=live_portal.storage_root),
    ):
        for tenant in Tenant.objects.filter(slug__in=slugs):
            if tenant.status in {TenantStatus.ACTIVE, TenantStatus.SUSPENDED}:
                tenant_delete(tenant=tenant, actor="test", confirm_slug=tenant.slug)
            if tenant.status == TenantStatus.DELETED:
                tenant_purge(tenant=tenant)


TENANT_ADMIN_PASSWORD = "Quartz-Lantern-9135-river"


@pytest.fixture
def committed_tenant(
    purge_tenants_after: list[str],
    django_db_blocker,  # type: ignore[no-untyped-def]
) -> Callable[[str, str], str]:
    """Make a committed tenant (slug `<prefix>-<random>`) whose admin logs in as `admin` with
    TENANT_ADMIN_PASSWORD; it is deleted and purged after the test."""
    from tenants.services import tenant_create

    def make(prefix: str, name: str) -> str:
        slug = f"{prefix}-{uuid.uuid4().hex[:6]}"
        purge_tenants_after.append(slug)
        with public_schema(django_db_blocker):
            tenant_create(
                slug=slug,
                name=name,
                admin_email=f"it@{slug}.example",
                admin_password=TENANT_ADMIN_PASSWORD,
                created_by="browser-test",
            )
        return slug

    return make
