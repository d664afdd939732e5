"""During an upgrade, a tenant whose schema still lacks this code's migrations is not served:
its site answers 503 (Retry-After) until `migrate_portal` has reached it, the others go on."""

from django.db import connection

from tenants import figures
from tenants.figures import figures_refresh, schema_behind
from tests.conftest import tenant_client


def test_a_tenant_behind_on_migrations_waits_and_the_others_are_served(new_tenant, alpha):
    behind = new_tenant("upgrading").tenant
    figures._gate.clear()
    assert not schema_behind(behind)
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM t_upgrading.django_migrations WHERE app = 'configuration' "
            "AND name = (SELECT max(name) FROM t_upgrading.django_migrations "
            "WHERE app = 'configuration')"
        )
    figures._gate.clear()
    # The figures still say "current" until the pass sees it; the pass then does.
    figures_refresh(tenants=[behind])
    assert schema_behind(behind)
    response = tenant_client(behind).get("/account/login/")
    assert response.status_code == 503 and response["Retry-After"] == "30"
    assert "being upgraded" in response.content.decode()
    assert tenant_client(alpha).get("/account/login/").status_code == 200


def test_figures_of_another_release_are_not_trusted(new_tenant, monkeypatch):
    tenant = new_tenant("next-release").tenant
    figures._gate.clear()
    monkeypatch.setattr(figures, "migrations_digest", lambda: "a-newer-release")
    assert not schema_behind(tenant)  # read from the schema itself: it is current
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM t_next_release.django_migrations WHERE app = 'studies'")
    assert not schema_behind(tenant)  # remembered for a few seconds...
    figures._gate.clear()
    assert schema_behind(tenant)  # ...then read again
