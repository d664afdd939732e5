"""Benchmark the platform-wide paths as tenants multiply (issue 14's table).

Creates bench tenants (slug `bench-fl-<n>`) with a few small studies each, through the real
services and ingest pipeline, up to each step of `--steps`; at each step it starts gunicorn
(`deploy/gunicorn.conf.py`) and measures:

- the fleet page `/tenants/` (p50 / p95 over `--runs`, its HTML size) and, in-process, the
  SQL statements one request of it makes;
- `/health/ready` (status and time, each request past the readiness cache) and `/metrics`
  (time, and how many tenants the scrape could not read);
- tenant creation: the median of the step's first and last ten creations;
- one PostgreSQL backend after it served every tenant in a row (the bench's own
  connection, as a web thread with CONN_MAX_AGE would): its memory and relation cache,
  without and with the connection budget (`portal/dbbudget.py`);
- the usage metering pass and the periodic fan-out (`schedulable_tenants`).

Tenants are kept between runs unless `--purge`: a later run with a larger step only adds
the difference. Needs DATABASE_URL (`make bench-fleet` starts an embedded PostgreSQL).
"""

import argparse
import http.client
import json
import os
import platform
import re
import secrets
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from support import free_port, service, setup_django

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

VAR = ROOT / ".var" / "bench-fleet"
PREFIX = "bench-fl-"
ADMIN, ADMIN_PASSWORD = "bench-fleet-root", "Bench-Fleet-Granite-4471"


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 1), "p95_ms": round(p95 * 1000, 1)}


def small_study(n: int, study: int) -> list[bytes]:
    import io

    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    template = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    files = []
    study_uid = generate_uid()
    for _ in range(2):
        template.StudyInstanceUID, template.SeriesInstanceUID = study_uid, generate_uid()
        template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        template.PatientID, template.PatientName = f"FL{n}-{study}", f"FLEET^{n}"
        out = io.BytesIO()
        template.save_as(out, enforce_file_format=True)
        files.append(out.getvalue())
    return files


def existing() -> list[Any]:
    from tenants.models import Tenant

    return list(Tenant.objects.filter(slug__startswith=PREFIX).order_by("created_at"))


def grow(target: int, studies: int) -> list[float]:
    """Create bench tenants until there are `target`; the seconds each creation took."""
    import io

    from django_tenants.utils import schema_context

    from studies.ingest.jobs import ingest_job_submit
    from studies.ingest.receive import JobStaging, ingest_job_create
    from tenants.services import tenant_create

    have = len(existing())
    seconds = []
    for n in range(have, target):
        started = time.perf_counter()
        created = tenant_create(
            slug=f"{PREFIX}{n:05d}",
            name=f"Fleet clinic {n:05d}",
            admin_email=f"it{n}@fleet.example",
            created_by="bench",
            admin_password=ADMIN_PASSWORD,  # no set-password mail to send
        )
        seconds.append(time.perf_counter() - started)
        with schema_context(created.tenant.schema_name):
            job = ingest_job_create(source="folder", description="bench")
            with JobStaging(job) as staging:
                for s in range(studies):
                    for i, data in enumerate(small_study(n, s)):
                        staging.stage(name=f"{s}-{i}.dcm", stream=io.BytesIO(data))
            ingest_job_submit(job=job, run_now=True)
        if (n + 1) % 100 == 0:
            say(f"{n + 1} tenants")
    return seconds


def superadmin() -> None:
    from accounts.models import User
    from accounts.services import user_create

    if not User.objects.filter(username=ADMIN).exists():
        user_create(
            username=ADMIN, email="root@fleet.example", password=ADMIN_PASSWORD, is_superuser=True
        )


class Http:
    """A keep-alive HTTP client of the super-admin site, logged in."""

    def __init__(self, port: int, host: str = "localhost") -> None:
        self.port, self.host = port, host
        self.cookies: dict[str, str] = {}
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def request(self, method: str, path: str, body: str = "", **headers: str) -> tuple[int, bytes]:
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        headers = {"Host": self.host, **({"Cookie": cookie} if cookie else {}), **headers}
        if body:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            self.connection.request(method, path, body=body or None, headers=headers)
            response = self.connection.getresponse()
        except (http.client.HTTPException, OSError):
            self.connection.close()
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            self.connection.request(method, path, body=body or None, headers=headers)
            response = self.connection.getresponse()
        for header, value in response.getheaders():
            if header.lower() == "set-cookie":
                name, _, rest = value.partition("=")
                self.cookies[name] = rest.split(";", 1)[0]
        return response.status, response.read()

    def log_in(self, username: str = ADMIN) -> None:
        _, page = self.request("GET", "/account/login/")
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token is not None, page[:500]
        form = urlencode(
            {
                "csrfmiddlewaretoken": token.group(1).decode(),
                "username": username,
                "password": ADMIN_PASSWORD,
            }
        )
        status, _ = self.request(
            "POST", "/account/login/", form, Referer=f"http://{self.host}/account/login/"
        )
        assert status == 302, status


def timed(call: Any, runs: int) -> tuple[list[float], Any]:
    samples, last = [], None
    for _ in range(runs):
        started = time.perf_counter()
        last = call()
        samples.append(time.perf_counter() - started)
    return samples, last


def fleet_statements() -> int:
    """SQL statements of one fleet page request, in-process (the super-admin's session)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_HOST="localhost")
    login = client.post("/account/login/", {"username": ADMIN, "password": ADMIN_PASSWORD})
    assert login.status_code == 302, login.status_code
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/tenants/")
    assert response.status_code == 200, response.status_code
    return len(queries)


def backend_memory(tenants: list[Any], *, budget: bool) -> dict[str, float]:
    """This process's connection after one ORM query in every tenant's schema, in a row, as
    a long-lived web thread serves them; with `budget`, the connection budget applies. As
    the owner role: reading a backend's memory contexts needs pg_read_all_stats."""
    from portal.dbroles import as_owner

    with as_owner():
        return _backend_memory(tenants, budget=budget)


def _backend_memory(tenants: list[Any], *, budget: bool) -> dict[str, float]:
    from django.db import connection
    from django_tenants.utils import schema_context

    from accounts.models import User
    from audit.models import AuditEvent
    from configuration.models import RemoteNode, TenantSettings
    from jobs.models import JobRun
    from studies.models import IngestJob, Instance, Series, StorageMedium, Study

    # What a tenant's dashboard and study list touch, roughly.
    models = [User, AuditEvent, RemoteNode, TenantSettings, JobRun, IngestJob]
    models += [Instance, Series, StorageMedium, Study]
    connection.close()
    recycled = 0
    for tenant in tenants:
        with schema_context(tenant.schema_name):
            for model in models:
                model.objects.exists()
        if budget:
            from portal.dbbudget import connection_over_budget

            if connection_over_budget():
                connection.close()
                recycled += 1
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sum(total_bytes), sum(total_bytes) FILTER "
            "(WHERE name IN ('CacheMemoryContext', 'index info')) "
            "FROM pg_backend_memory_contexts"
        )
        total, cache = cursor.fetchone()
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    private = 0.0
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        private = int(re.search(r"RssAnon:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
    except (OSError, AttributeError):
        pass
    connection.close()
    return {
        "contexts_mib": round(float(total) / 2**20, 1),
        "relation_cache_mib": round(float(cache or 0) / 2**20, 1),
        "private_mib": round(private, 1),
        "recycled": recycled,
    }


def platform_passes() -> dict[str, float]:
    from tenants import usage
    from tenants.selectors import schedulable_tenants

    started = time.perf_counter()
    today = usage.utc_today()
    for tenant in usage.metered_tenants():
        usage.usage_record_compute(tenant=tenant, day=today)
    metering = time.perf_counter() - started
    started = time.perf_counter()
    schedulable = len(schedulable_tenants())
    return {
        "metering_s": round(metering, 2),
        "fan_out_s": round(time.perf_counter() - started, 2),
        "schedulable": schedulable,
    }


def measure_step(count: int, creation: list[float], args: argparse.Namespace) -> dict[str, Any]:
    from django.db import connection

    tenants = existing()
    row: dict[str, Any] = {"tenants": len(tenants)}
    if creation:
        row["creation_first10_s"] = round(statistics.median(creation[:10]), 3)
        row["creation_last10_s"] = round(statistics.median(creation[-10:]), 3)
        row["creation_median_s"] = round(statistics.median(creation), 3)
    started = time.perf_counter()
    refresh_figures()
    row["figures_pass_s"] = round(time.perf_counter() - started, 2)
    connection.close()
    row["fleet_statements"] = fleet_statements()
    row["backend"] = backend_memory(tenants, budget=False)
    row["backend_with_budget"] = backend_memory(tenants, budget=True)
    row.update(platform_passes())
    connection.close()
    port = free_port()
    env = {
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "ALLOWED_HOSTS": "localhost,.localhost,127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "LOG_LEVEL": "WARNING",
        "CONN_MAX_AGE": "60",
        "PORTAL_HEARTBEAT_MAX_AGE": "0",
        "PORTAL_SUPERADMIN_2FA": "false",  # the bench logs in with a password only
    }
    command = [sys.executable, "-m", "gunicorn", "--config", "deploy/gunicorn.conf.py"]
    command += ["-b", f"127.0.0.1:{port}", "portal.wsgi"]
    with ExitStack() as stack:
        stack.enter_context(service(command, VAR / "gunicorn.log", port, env=env))
        client = Http(port)
        client.log_in()
        page = client.request("GET", "/tenants/")
        assert page[0] == 200, page[0]
        samples, (_, body) = timed(lambda: client.request("GET", "/tenants/"), args.runs)
        row["fleet_page"] = {**summary(samples), "kib": round(len(body) / 1024)}

        def ready() -> int:
            time.sleep(5.1)  # past the readiness cache of the process
            return client.request("GET", "/health/ready")[0]

        samples, status = timed(ready, 3)
        samples = [s - 5.1 for s in samples]
        row["ready"] = {**summary(samples), "status": status}

        def scrape() -> bytes:
            return client.request("GET", "/metrics")[1]

        samples, text = timed(scrape, 5)
        unread = re.search(rb'portal_scrape_error\{part="tenants"\} (\d+)', text)
        row["metrics"] = {**summary(samples), "unread": int(unread.group(1)) if unread else None}
        samples, _ = timed(lambda: client.request("GET", "/platform/"), 5)
        row["platform_page"] = summary(samples)
        # One tenant's own pages: they should not notice the fleet around them.
        site = Http(port, host=f"{tenants[-1].slug}.localhost")
        site.log_in("admin")
        for path in ("/", "/studies/", "/settings/"):
            assert site.request("GET", path)[0] == 200, path
            samples, _ = timed(lambda path=path: site.request("GET", path), args.runs)
            row[f"tenant {path}"] = summary(samples)
    return row


def refresh_figures() -> None:
    """The fleet figures the periodic pass keeps, brought up to date (when the code has it)."""
    try:
        from tenants.figures import figures_refresh
    except ImportError:
        return
    figures_refresh(stale_after=0, time_budget=None)


def purge() -> None:
    from tenants.services import tenant_delete, tenant_purge

    for tenant in existing():
        tenant = tenant_delete(tenant=tenant, actor="bench", confirm_slug=tenant.slug)
        tenant_purge(tenant=tenant)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/fleet.py", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--steps", default="10,100,1000", help="tenant counts to measure at (default 10,100,1000)"
    )
    parser.add_argument("--studies", type=int, default=3, help="studies per tenant (default 3)")
    parser.add_argument("--runs", type=int, default=20, help="fleet page requests per step")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--purge", action="store_true", help="delete the bench tenants after")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_django(VAR / "storage")
    from django.core.management import call_command

    call_command("migrate_portal", verbosity=0)
    superadmin()
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "steps": [],
    }
    for step in [int(s) for s in args.steps.split(",")]:
        say(f"growing to {step} tenants")
        creation = grow(step, args.studies)
        say(f"measuring at {step}")
        row = measure_step(step, creation, args)
        results["steps"].append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.purge:
        purge()
    return 0


if __name__ == "__main__":
    sys.exit(main())
