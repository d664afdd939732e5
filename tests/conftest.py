"""Shared fixtures: two twin tenants (alpha, beta) made once, clients and users per test.

The tenants are created once per session by the real provisioning service and committed;
each test then runs in a rolled-back transaction, so what a test writes disappears.
"""

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test import Client
from django_tenants.utils import schema_context
from psycopg import sql

from accounts.models import Role, User
from accounts.services import user_create
from portal import dbroles
from tenants import services
from tenants.models import Tenant, TenantStatus

PASSWORD = "correct-horse-battery-staple"
TWINS = ("alpha", "beta")


def test_database_url() -> str:
    """DATABASE_URL with the test database's name, for a second session or a subprocess.

    Built from the URL rather than from settings: with the embedded server the host is a
    socket directory in the query string (`?host=`), which settings keep in OPTIONS."""
    from urllib.parse import quote, urlsplit, urlunsplit

    from django.db import connections

    test_name = connections["default"].settings_dict["NAME"]
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + quote(test_name)))


test_database_url.__test__ = False  # type: ignore[attr-defined]  # not a test, says pytest


def require_tool(path: str, what: str) -> None:
    """Skip with a reason when run by hand; under CI (`CI` set), a missing tool is a failure."""
    if shutil.which(path) or os.path.exists(path):
        return
    reason = f"{what} is not installed ({path}); .ci/run installs it"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def django_db_setup(  # type: ignore[no-untyped-def]
    request,
    django_test_environment,
    django_db_blocker,
    django_db_keepdb,
    django_db_createdb,
    django_db_modify_db_settings,
):
    """The test database, always. pytest-django only sets up the databases the collected
    tests ask for, so running the browser tests alone would have used the dev database."""
    from django.test.utils import setup_databases

    with django_db_blocker.unblock():
        # Created and migrated by the owner role, used by the application role: the tests
        # run with the same split as a deployment (portal/dbroles.py).
        with dbroles.as_owner():
            setup_databases(
                verbosity=request.config.option.verbose,
                interactive=False,
                keepdb=django_db_keepdb and not django_db_createdb,
                aliases={"default"},
            )
            call_command("migrate_portal", verbosity=0)
            _let_tests_become_owner()
        for slug in TWINS:
            tenant = Tenant.objects.filter(slug=slug).first()
            if tenant is not None and tenant.status != TenantStatus.ACTIVE:
                tenant.status = TenantStatus.ACTIVE  # a test run killed mid-way
                tenant.save(update_fields=["status"])
            if tenant is None:
                services.tenant_create(
                    slug=slug,
                    name=f"{slug.title()} Hospital",
                    admin_email=f"admin@{slug}.example",
                    ae_title=slug.upper(),
                    created_by="tests",
                )


def _let_tests_become_owner() -> None:
    """Tests only: the application role may `SET ROLE` to the owner (the `as_table_owner`
    fixture), without inheriting any of its rights. Deployments grant no such membership."""
    role, owner = dbroles.app_role(), dbroles.owner_settings()
    if role is None or owner is None:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            sql.SQL("GRANT {} TO {} WITH INHERIT FALSE, SET TRUE")
            .format(sql.Identifier(owner["USER"]), sql.Identifier(role))
            .as_string(cursor.connection)
        )


@contextmanager
def owner_role() -> Iterator[None]:
    """Run the block, inside the test's transaction, as the owner role (`SET LOCAL ROLE`):
    for what only an owner may do, such as tampering with the audit log behind its trigger
    or creating a bare schema. Deployments grant the processes no such membership."""
    owner = dbroles.owner_settings()
    if owner is None:
        yield
        return
    # In a transaction (or savepoint) of its own: an error in the block rolls the role back
    # with it, and outside a test's transaction SET LOCAL would do nothing.
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                sql.SQL("SET LOCAL ROLE {}")
                .format(sql.Identifier(owner["USER"]))
                .as_string(cursor.connection)
            )
        yield
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")


@contextmanager
def autocommitting(django_db_blocker) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Database access outside a test transaction: for code whose other threads (a DICOM
    gateway's associations) must read what the test writes. What it commits stays, so the
    test cleans up after itself (a purge, for tenants).

    The browser tests' session-wide Playwright keeps an event loop on this thread, and Django
    refuses queries when it sees one; these are plain synchronous calls, so the check is off.
    """
    with django_db_blocker.unblock(), pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        connection.set_schema_to_public()
        yield


@pytest.fixture
def autocommit_db(django_db_setup, django_db_blocker) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """`autocommitting` for one test."""
    with autocommitting(django_db_blocker):
        yield


@pytest.fixture
def as_table_owner(db) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """The whole test runs as the owner role (see `owner_role`)."""
    with owner_role():
        yield


@pytest.fixture(autouse=True)
def _public_schema_after_test() -> Iterator[None]:
    yield
    connection.set_schema_to_public()


@pytest.fixture(autouse=True)
def _remove_new_tenant_directories() -> Iterator[None]:
    """Tenant rows roll back with the test; the directories their creation made go too."""
    from django.conf import settings

    root = Path(settings.PORTAL_STORAGE_ROOT)
    before = set(root.iterdir()) if root.is_dir() else set()
    yield
    for path in (set(root.iterdir()) if root.is_dir() else set()) - before:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def alpha(db) -> Tenant:  # type: ignore[no-untyped-def]
    return Tenant.objects.get(slug="alpha")


@pytest.fixture
def beta(db) -> Tenant:  # type: ignore[no-untyped-def]
    return Tenant.objects.get(slug="beta")


def host_of(tenant: Tenant) -> str:
    return f"{tenant.slug}.localhost"


@pytest.fixture
def make_user(db) -> Callable[..., User]:  # type: ignore[no-untyped-def]
    """Create a user in a tenant's schema (or public with tenant=None)."""

    def make(
        tenant: Tenant | None,
        *,
        username: str | None = None,
        role: str = Role.ADMIN,
        superuser: bool = False,
    ) -> User:
        schema = tenant.schema_name if tenant else "public"
        with schema_context(schema):
            return user_create(
                username=username or f"u{uuid.uuid4().hex[:8]}",
                email="someone@example.org",
                role=role,
                password=PASSWORD,
                is_superuser=superuser,
            )

    return make


def tenant_client(tenant: Tenant, **extra: str) -> Client:
    return Client(HTTP_HOST=host_of(tenant), **extra)


def logged_in(client: Client, username: str, *, prefix: str = "") -> Client:
    response = client.post(f"{prefix}/account/login/", {"username": username, "password": PASSWORD})
    assert response.status_code == 302, response.content.decode()[:2000]
    return client


@pytest.fixture
def client_as(alpha, make_user) -> Callable[..., Client]:  # type: ignore[no-untyped-def]
    """A logged-in client of a new user with `role`, in alpha unless another tenant is given."""

    def make(role: str, tenant: Tenant | None = None) -> Client:
        tenant = tenant or alpha
        user = make_user(tenant, role=role)
        return logged_in(tenant_client(tenant), user.username)

    return make


@pytest.fixture
def superadmin(make_user) -> User:  # type: ignore[no-untyped-def]
    return make_user(None, username="root", superuser=True)


@pytest.fixture
def superadmin_client(superadmin) -> Client:  # type: ignore[no-untyped-def]
    return logged_in(Client(HTTP_HOST="localhost"), superadmin.username)


@pytest.fixture
def alpha_admin(make_user, alpha) -> User:  # type: ignore[no-untyped-def]
    return make_user(alpha, username="alice")


@pytest.fixture
def alpha_admin_client(alpha, alpha_admin) -> Client:  # type: ignore[no-untyped-def]
    return logged_in(tenant_client(alpha), alpha_admin.username)


@pytest.fixture
def new_tenant(db) -> Callable[..., services.TenantCreation]:  # type: ignore[no-untyped-def]
    """Provision a throwaway tenant inside the test's transaction (its files are removed)."""
    made: list[Tenant] = []

    def make(slug: str | None = None, **kwargs: object) -> services.TenantCreation:
        slug = f"tmp-{uuid.uuid4().hex[:8]}" if slug is None else slug
        creation = services.tenant_create(
            slug=slug,
            name=kwargs.pop("name", slug.title()),
            admin_email=kwargs.pop("admin_email", "admin@example.org"),
            created_by="tests",
            **kwargs,
        )  # type: ignore[arg-type]
        made.append(creation.tenant)
        return creation

    yield make
    for tenant in made:
        shutil.rmtree(tenant.storage_root, ignore_errors=True)


@pytest.fixture
def fresh_rate_limits() -> Iterator[None]:
    """Rate-limit and audit-coalescing counters live in Redis, outside the test's transaction:
    a test that counts them starts from zero and leaves none behind for the next."""
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)

    def clear() -> None:
        for pattern in ("*rl:*", "*audit-window:*"):
            for key in client.scan_iter(match=pattern, count=1000):
                client.delete(key)

    clear()
    yield
    clear()
