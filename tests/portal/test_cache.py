"""The shared Redis cache: every key carries the active schema."""

from django.core.cache import cache
from django_tenants.utils import schema_context


def test_cache_entries_of_one_tenant_are_invisible_to_another(alpha, beta):
    with schema_context(alpha.schema_name):
        cache.set("dashboard-figures", {"studies": 42}, 30)
        assert cache.get("dashboard-figures") == {"studies": 42}
        key = cache.make_key("dashboard-figures")
    assert key.startswith(f"{alpha.schema_name}:")
    with schema_context(beta.schema_name):
        assert cache.get("dashboard-figures") is None
        cache.set("dashboard-figures", {"studies": 1}, 30)
    assert cache.get("dashboard-figures") is None  # public sees neither
    with schema_context(alpha.schema_name):
        assert cache.get("dashboard-figures") == {"studies": 42}
        cache.delete("dashboard-figures")
    with schema_context(beta.schema_name):
        cache.delete("dashboard-figures")
