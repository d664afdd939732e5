"""`migrate_portal --jobs N`: tenant schemas migrated by N processes at once; a tenant that
fails is named and does not stop the others."""

import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.core.management import call_command
from django.db import connection
from django_tenants.utils import quote_schema_name

from tenants.models import Tenant
from tenants.provisioning import migration_state
from tenants.services import tenant_create, tenant_delete, tenant_purge
from tests.conftest import owner_role, test_database_url


@pytest.fixture
def two_tenants(autocommit_db):
    tag = uuid.uuid4().hex[:6]
    made = [
        tenant_create(
            slug=f"mig-{tag}-{n}",
            name=f"Migrated {n}",
            admin_email="a@example.org",
            created_by="tests",
        ).tenant
        for n in range(2)
    ]
    yield made
    connection.set_schema_to_public()
    for tenant in Tenant.objects.filter(pk__in=[t.pk for t in made]):
        tenant_purge(tenant=tenant_delete(tenant=tenant, actor="tests", confirm_slug=tenant.slug))


def test_two_processes_migrate_every_schema_and_a_broken_one_is_named(
    two_tenants, capsys, monkeypatch
):
    healthy, broken = two_tenants
    # The processes it starts read the environment: the test database, as owner and app.
    for name in ("DATABASE_URL", "DATABASE_OWNER_URL"):
        if name in os.environ:
            parts = urlsplit(os.environ[name])
            monkeypatch.setenv(
                name, urlunsplit(parts._replace(path=urlsplit(test_database_url()).path))
            )
    # Its migration records say studies never ran, though the tables are there: migrating it
    # again fails ("already exists"), as a schema someone altered by hand would.
    with owner_role(), connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {quote_schema_name(broken.schema_name)}.django_migrations "
            "WHERE app = 'studies'"
        )
    with pytest.raises(SystemExit) as stopped:
        call_command("migrate_portal", "--jobs", "2", "--all")
    assert stopped.value.code == 1
    out, err = capsys.readouterr()
    assert f"tenant schema {broken.schema_name}: migration failed" in err
    assert ", 1 FAILED" in out and "tenant schema(s) migrated" in out
    assert migration_state(healthy.schema_name).is_current
    assert not migration_state(broken.schema_name).is_current
    # Put back as it was, so that the purge afterwards finds a whole schema.
    with owner_role(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote_schema_name(broken.schema_name)}.django_migrations "
            "(app, name, applied) SELECT app, name, applied FROM "
            f"{quote_schema_name(healthy.schema_name)}.django_migrations WHERE app = 'studies'"
        )
