"""Fixtures of the /studies/ pages' tests."""

import pytest

from tenants.models import Tenant
from tests.conftest import logged_in, tenant_client


@pytest.fixture
def client_as(alpha, make_user):
    """A logged-in client of a role, in alpha unless another tenant is given."""

    def make(role: str, tenant: Tenant | None = None):
        tenant = tenant or alpha
        user = make_user(tenant, role=role)
        return logged_in(tenant_client(tenant), user.username)

    return make
