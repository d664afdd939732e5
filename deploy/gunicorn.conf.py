"""gunicorn settings of the web service (`gunicorn --config deploy/gunicorn.conf.py`).

Threads, not more processes, carry the long requests: a WADO-RS stream or a STOW-RS upload
holds its thread for minutes while nginx passes the bytes through unbuffered. Each setting can
be changed through the environment named beside it; GUNICORN_CMD_ARGS overrides any of them.
"""

import os

bind = "0.0.0.0:8000"
# gunicorn's own variable; about one process per core, each with GUNICORN_THREADS threads.
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
# With threads, the timeout is the worker's liveness (a hung worker is restarted after it);
# it is also long enough for a whole 20 GiB upload or stream should a sync worker be chosen.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "3600"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
# X-Forwarded-Proto etc. are believed only from nginx (its fixed address in the compose
# network; gunicorn matches exact addresses, not networks).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
# No recycling by default: a recycled process gives its running requests only
# graceful_timeout seconds, which would cut long streams and uploads short.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
max_requests_jitter = max_requests // 10
# Heartbeat files in memory, not on the container's overlay filesystem.
worker_tmp_dir = "/dev/shm"  # noqa: S108 - gunicorn's advice for containers
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    """Drop a finished process' live gauges from the multi-process metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
