"""Which gateway and worker processes run, for the platform page, without asking them.

Each gateway process writes a snapshot to Redis every `INTERVAL` seconds (its host, pid,
port and open associations per tenant slug), kept for `TTL` seconds, so a process that died
drops out within that time; each Celery worker does the same (without counts). The platform
page reads the snapshots (`gateway_presence`, `worker_presence`) instead of pinging the
workers, which always waited its whole timeout. Redis being unreachable costs a process
nothing but its snapshot: it never stops serving.
"""

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings

from portal import health
from tenants.validators import SLUG_RE

logger = logging.getLogger(__name__)

KEY_PREFIX = "portal:gateway:"
WORKER_PREFIX = "portal:worker:"
INTERVAL = 5.0
TTL = 15
MAX_PROCESSES = 100  # read at most this many snapshots (a page, not a census)


@dataclass(frozen=True)
class GatewayProcess:
    name: str
    age: float  # seconds since its snapshot
    associations: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.associations.values())


class Presence(threading.Thread):
    """Publishes `counts()` (tenant slug -> open associations) until `stop()`."""

    def __init__(
        self,
        counts: Callable[[], dict[str, int]],
        *,
        label: str = "",
        prefix: str = KEY_PREFIX,
        name: str = "",
    ) -> None:
        super().__init__(name="presence", daemon=True)
        self.counts = counts
        self.prefix = prefix
        default = f"{socket.gethostname()}:{os.getpid()}{f':{label}' if label else ''}"
        self.name_in_redis = name or default
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.is_set():
            self.publish()
            self._stopped.wait(INTERVAL)

    def publish(self) -> None:
        snapshot = {"at": time.time(), "associations": self.counts()}
        try:
            client = health.redis_client(settings.REDIS_URL)
            client.set(self.prefix + self.name_in_redis, json.dumps(snapshot), ex=TTL)
        except Exception as error:  # the platform page then shows fewer processes
            logger.debug("gateway presence not published: %s", error)

    def stop(self) -> None:
        self._stopped.set()
        try:
            health.redis_client(settings.REDIS_URL).delete(self.prefix + self.name_in_redis)
        except Exception as error:
            logger.debug("gateway presence not removed: %s", error)


def gateway_presence() -> list[GatewayProcess]:
    """The gateway processes seen within TTL seconds, each with its associations."""
    return presence(KEY_PREFIX)


def worker_presence() -> list[GatewayProcess]:
    """The Celery workers seen within TTL seconds (started by `worker_ready`)."""
    return presence(WORKER_PREFIX)


def presence(prefix: str) -> list[GatewayProcess]:
    client = health.redis_client(settings.REDIS_URL)
    keys = []
    for key in client.scan_iter(match=prefix + "*", count=100):
        keys.append(key)
        if len(keys) >= MAX_PROCESSES:
            break
    now = time.time()
    found = []
    for key, raw in zip(keys, client.mget(keys) if keys else [], strict=True):
        if raw is None:  # expired between the scan and the read
            continue
        try:
            snapshot = json.loads(raw)
            counts = {
                str(slug): int(n)
                for slug, n in dict(snapshot["associations"]).items()
                if isinstance(n, int) and n > 0 and SLUG_RE.match(str(slug))
            }
            age = max(0.0, now - float(snapshot["at"]))
        except (TypeError, ValueError, KeyError, RecursionError):
            continue  # not a snapshot this module wrote
        name = key.decode() if isinstance(key, bytes) else str(key)
        found.append(GatewayProcess(name.removeprefix(prefix), age, counts))
    return sorted(found, key=lambda p: p.name)
