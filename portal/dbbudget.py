"""A budget of tenant schemas per database connection, so backend memory stays bounded.

`portal.db.base` counts the schemas each connection entered. After a request, a Celery task
and a gateway association, `recycle_over_budget` closes every connection of the thread that
entered more than PORTAL_DB_SCHEMAS_PER_CONNECTION schemas; the next query opens a fresh
backend, whose caches start empty. A pooled connection is closed for good (the pool drops
a closed connection and opens a new one when it needs to). The recycling is counted in
`portal_db_connections_recycled_total` on /metrics.
"""

import logging
from typing import Any

from django.conf import settings
from django.db import connections
from prometheus_client import Counter

logger = logging.getLogger(__name__)

RECYCLED = Counter(
    "portal_db_connections_recycled",
    "Database connections closed because they entered more tenant schemas than their budget.",
)


def connection_over_budget(alias: str = "default") -> bool:
    wrapper: Any = connections[alias]
    entered = getattr(wrapper, "schemas_entered", None)
    return entered is not None and entered() > settings.PORTAL_DB_SCHEMAS_PER_CONNECTION


def recycle_over_budget(**_: Any) -> int:
    """Close this thread's connections that are past their budget (outside a transaction);
    how many. Connected to the end of requests and tasks; the gateway calls it itself."""
    closed = 0
    for wrapper in connections.all(initialized_only=True):
        if wrapper.in_atomic_block or not connection_over_budget(wrapper.alias):
            continue
        raw = wrapper.connection
        entered = wrapper.schemas_entered()  # type: ignore[attr-defined]
        if raw is not None:
            raw.close()  # a pool then discards it instead of lending it again
        wrapper.close()
        RECYCLED.inc()
        closed += 1
        logger.info("database connection recycled after %d tenant schemas", entered)
    return closed
