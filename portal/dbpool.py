"""A pool of PostgreSQL connections for a process whose threads are short-lived.

The DICOM gateway runs each association in a thread of its own, and a Django connection
belongs to its thread: without a pool every association opened a PostgreSQL backend before
it could answer (profiled: 4 of the 14 ms an association check took, and the first query on
a new backend 2 ms more). Django's own pool (psycopg_pool) hands a thread's connection to
the next thread instead.

Tenant isolation holds across the hand-over: django-tenants issues `SET search_path` before
the first query of every new connection wrapper (its cached path starts empty), and the
pool resets the path when a connection comes back, so a stale tenant's path is never in
force.
"""

import logging
from typing import Any

from django.db import connections

logger = logging.getLogger(__name__)


def _forget_schema(connection: Any) -> None:
    """psycopg_pool's `reset`: run on a connection returned to the pool."""
    connection.execute("RESET search_path")


def pool_connections(*, max_size: int, alias: str = "default") -> None:
    """From now on, this process's threads take `alias`'s connections from a pool of at
    most `max_size`. Call it before the process's threads use the database."""
    connections.close_all()
    settings_dict = connections.settings[alias]
    # Django refuses a pool with persistent connections: the pool is what persists.
    settings_dict["CONN_MAX_AGE"] = 0
    settings_dict.setdefault("OPTIONS", {})["pool"] = {
        "min_size": min(2, max_size),
        "max_size": max_size,
        # A thread that finds every connection taken waits this long, then fails.
        "timeout": 30,
        "reset": _forget_schema,
    }
    logger.info("database connections pooled, at most %d", max_size)
