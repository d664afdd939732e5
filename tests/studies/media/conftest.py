"""An S3 API for the object storage media tests (moto behind a fault proxy, on 127.0.0.1)."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from studies.models import StorageMedium
from tenants.models import Tenant
from tests.studies.media.s3 import (
    ACCESS_KEY,
    SECRET_KEY,
    FaultProxy,
    moto_server,
    new_bucket,
    start_proxy,
)


@dataclass
class S3:
    proxy: FaultProxy
    bucket: str

    @property
    def url(self) -> str:
        return self.proxy.url


@pytest.fixture(scope="session")
def s3_upstream() -> Iterator[tuple[str, int]]:
    yield from moto_server()


@pytest.fixture(scope="session")
def s3_proxy(s3_upstream) -> Iterator[FaultProxy]:
    proxy = start_proxy(s3_upstream)
    yield proxy
    proxy.release.set()
    proxy.server.shutdown()


@pytest.fixture
def s3(s3_proxy, settings) -> S3:
    """A fresh bucket behind the proxy, which the platform lists as an allowed endpoint."""
    s3_proxy.clear()
    settings.PORTAL_S3_ALLOWED_ENDPOINTS = [s3_proxy.url]
    settings.PORTAL_S3_TIMEOUT = 5
    settings.PORTAL_S3_ATTEMPTS = 4
    return S3(proxy=s3_proxy, bucket=new_bucket(s3_proxy.url))


@pytest.fixture
def add_s3(s3, add_medium) -> Callable[..., StorageMedium]:
    """Create an object storage medium in the test's bucket (preferred by ingest)."""

    def add(name: str = "bucket", tenant: Tenant | None = None, **kwargs: object):
        fields = {
            "kind": "s3",
            "endpoint_url": s3.url,
            "bucket": s3.bucket,
            "access_key_id": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            "priority": 10,
            **kwargs,
        }
        return add_medium(name, root="-", tenant=tenant, **fields)

    return add
