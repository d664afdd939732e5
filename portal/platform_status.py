"""The super-admin's platform page: what /health/ready checks, with the reasons, and what the
workers are doing (queue lengths, the workers that answer, the singleton's heartbeat)."""

import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from dicomnet.presence import TTL, gateway_presence, worker_presence
from portal import health


@dataclass
class PlatformStatus:
    checks: list[health.Check]
    queues: dict[str, int | None] = field(default_factory=dict)  # None: not readable
    workers: list[str] = field(default_factory=list)
    workers_problem: str = ""
    heartbeat_age: float | None = None
    gateways: list[Any] = field(default_factory=list)  # dicomnet.presence.GatewayProcess
    associations: dict[str, int] = field(default_factory=dict)  # tenant slug -> open, all

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


def platform_status() -> PlatformStatus:
    """Fresh figures (not /health/ready's cached answer); the processes from their snapshots
    in Redis (dicomnet/presence.py), so the page waits for none of them."""
    status = PlatformStatus(checks=health.readiness())
    try:
        client = health.redis_client(settings.CELERY_BROKER_URL)
        for queue in (settings.CELERY_TASK_DEFAULT_QUEUE, settings.CELERY_PERIODIC_QUEUE):
            status.queues[queue] = int(client.llen(queue))
        raw = health.redis_client(settings.REDIS_URL).get(health.HEARTBEAT_KEY)
        if raw:
            status.heartbeat_age = max(0.0, time.time() - float(raw))
        status.gateways = gateway_presence()
        for process in status.gateways:
            for slug, count in process.associations.items():
                status.associations[slug] = status.associations.get(slug, 0) + count
    except Exception as error:  # the broker's check above already says why
        status.queues = dict.fromkeys(status.queues or ("default", "periodic"))
        status.workers_problem = f"broker not readable: {type(error).__name__}"
        return status
    status.workers = [process.name for process in worker_presence()]
    if not status.workers:
        status.workers_problem = f"no worker seen in the last {TTL} s"
    return status
