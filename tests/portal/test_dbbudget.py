"""A database connection that served too many tenant schemas is replaced after its request,
task or association, so PostgreSQL's per-backend catalogue caches stay bounded."""

from django.db import connection
from django.test import Client
from django_tenants.utils import schema_context

from accounts.models import User
from portal.dbbudget import RECYCLED, connection_over_budget, recycle_over_budget
from tenants.models import Tenant


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def enter(*schemas: str) -> None:
    for schema in schemas:
        with schema_context(schema):
            User.objects.exists()


def test_a_connection_past_its_budget_is_replaced_by_a_fresh_backend(autocommit_db, settings):
    settings.PORTAL_DB_SCHEMAS_PER_CONNECTION = 2
    alpha, beta = (Tenant.objects.get(slug=s) for s in ("alpha", "beta"))
    connection.close()
    first = backend_pid()
    enter(alpha.schema_name)
    assert connection.schemas_entered() == 2  # public (the pid query) and alpha
    assert not connection_over_budget() and recycle_over_budget() == 0
    assert backend_pid() == first
    enter(beta.schema_name)
    assert connection.schemas_entered() == 3 and connection_over_budget()
    before = RECYCLED._value.get()
    assert recycle_over_budget() == 1
    assert RECYCLED._value.get() == before + 1
    assert backend_pid() != first  # a new backend, its caches empty
    assert connection.schemas_entered() == 1


def test_the_end_of_a_request_recycles_it(autocommit_db, settings):
    settings.PORTAL_DB_SCHEMAS_PER_CONNECTION = 1
    connection.close()
    enter("public", Tenant.objects.get(slug="alpha").schema_name)
    first = backend_pid()
    Client(HTTP_HOST="beta.localhost").get("/health/live")
    assert backend_pid() != first


def test_inside_a_transaction_nothing_is_closed(db, settings):
    settings.PORTAL_DB_SCHEMAS_PER_CONNECTION = 0
    enter(Tenant.objects.get(slug="alpha").schema_name)
    assert connection_over_budget()
    assert recycle_over_budget() == 0  # the test's transaction is still open
    assert connection.connection is not None
