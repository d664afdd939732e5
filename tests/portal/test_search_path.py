"""`TENANT_LIMIT_SET_CALLS`: the search path is set once per schema switch, and never trusted
after PostgreSQL discarded it (a rolled-back transaction or savepoint reverts a `SET`)."""

import contextlib

from django.conf import settings
from django.db import DataError, connection, transaction
from django_tenants.utils import schema_context


def current_schema() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        return str(cursor.fetchone()[0])


def test_set_calls_are_limited(db):
    assert settings.TENANT_LIMIT_SET_CALLS is True


def test_a_rolled_back_savepoint_does_not_leave_the_other_tenants_path(alpha, beta):
    with schema_context(beta.schema_name):
        assert current_schema() == beta.schema_name
    with schema_context(alpha.schema_name):
        try:
            with transaction.atomic():
                # The SET for alpha happens inside this savepoint ...
                assert current_schema() == alpha.schema_name
                raise RuntimeError("roll it back")
        except RuntimeError:
            pass
        # ... whose rollback reverted the path to beta's in PostgreSQL.
        assert current_schema() == alpha.schema_name


def test_a_failed_statement_does_not_leave_the_other_tenants_path(alpha, beta):
    with schema_context(beta.schema_name):
        assert current_schema() == beta.schema_name
    with schema_context(alpha.schema_name):
        with contextlib.suppress(DataError), transaction.atomic():
            current_schema()
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 / 0")
        assert current_schema() == alpha.schema_name
