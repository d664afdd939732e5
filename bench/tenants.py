"""Benchmark tenant creation, the per-schema migration passes, and clean up (`make bench`)."""

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# `python bench/tenants.py` puts bench/ first on sys.path, where this file would shadow the
# `tenants` app; the repository root goes there instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

TARGET_MEDIAN_SECONDS = 0.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/tenants.py",
        description="Create COUNT tenants with tenants.services.tenant_create and time each; "
        "time `migrate_schemas --tenant` and `migrate_portal` over all tenant "
        "schemas; then delete and purge the bench tenants. Needs DATABASE_URL "
        "(`make bench` starts an embedded PostgreSQL under .var/bench).",
    )
    parser.add_argument(
        "--count", type=int, default=50, help="How many tenants to create (default: 50)."
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="Keep the bench tenants (and their storage) instead of purging them.",
    )
    parser.add_argument(
        "--json", action="store_true", help="Print the results as JSON instead of a table."
    )
    parser.add_argument(
        "--fresh-connection",
        action="store_true",
        help="Close the database connection before each creation, as a web "
        "request does with CONN_MAX_AGE=0 (default: one connection for "
        "the whole run, like a script or `manage.py tenant create` loop).",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="Also time the phases of each creation (schema_create, the clone "
        "inside it, the rest of tenant_create).",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="Run cProfile over N extra creations (not in the figures) and "
        "print the top functions by cumulative time.",
    )
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    return args


def setup_django(storage_root: Path) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.setdefault("DEBUG", "true")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ["PORTAL_STORAGE_ROOT"] = str(storage_root)
    import django

    django.setup()


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    # Nearest-rank p95: the smallest sample with at least 95 % of the samples at or below it.
    p95 = ordered[max(0, -(-95 * len(ordered) // 100) - 1)]
    return {
        "median": statistics.median(ordered),
        "p95": p95,
        "min": ordered[0],
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
        "total": sum(ordered),
    }


class PhaseTimer:
    """Wraps a few functions on the creation path and adds up the time spent in each."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()  # of the creation under way
        self.samples: dict[str, list[float]] = {}  # one value per finished creation
        self._undo: list[Callable[[], None]] = []

    def creation_done(self, total: float) -> None:
        self.seconds["rest of tenant_create"] = total - self.seconds["schema_create"]
        for label, value in self.seconds.items():
            self.samples.setdefault(label, []).append(value)
        self.seconds.clear()

    def wrap(self, owner: Any, attribute: str, label: str) -> None:
        original = getattr(owner, attribute)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - started

        setattr(owner, attribute, timed)
        self._undo.append(lambda: setattr(owner, attribute, original))

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()


@contextmanager
def phases() -> Iterator[PhaseTimer]:
    """Time schema_create and, inside it, whichever clone implementation is in use."""
    from tenants import provisioning

    timer = PhaseTimer()
    timer.wrap(provisioning, "schema_create", "schema_create")
    timer.wrap(provisioning, "template_is_current", "schema_create: template_is_current")
    if hasattr(provisioning, "clone_schema"):  # tenants.cloning.clone_schema
        timer.wrap(provisioning, "clone_schema", "schema_create: clone_schema")
    try:  # django-tenants' plpgsql clone, if provisioning still goes through it
        from django_tenants.clone import CloneSchema

        timer.wrap(CloneSchema, "clone_schema", "schema_create: CloneSchema.clone_schema")
        timer.wrap(
            CloneSchema,
            "_create_clone_schema_function",
            "schema_create: CloneSchema: (re)install the clone_schema SQL function",
        )
    except ImportError:
        pass
    try:
        yield timer
    finally:
        timer.restore()


def create_tenants(
    run_id: str,
    start: int,
    count: int,
    tenants: list[Any],
    timer: PhaseTimer | None = None,
    fresh_connection: bool = False,
) -> tuple[list[float], Counter[str]]:
    """Create tenants bench-RUN-start.. and append them to `tenants` (for the cleanup)."""
    from django.db import connection

    from tenants.services import tenant_create

    seconds: list[float] = []
    methods: Counter[str] = Counter()
    for i in range(start, start + count):
        slug = f"bench-{run_id}-{i}"
        if fresh_connection:
            connection.close()
        started = time.perf_counter()
        creation = tenant_create(
            slug=slug,
            name=f"Bench {run_id} #{i}",
            admin_email=f"admin@{slug}.example.org",
            created_by="bench",
        )
        seconds.append(time.perf_counter() - started)
        if timer is not None:
            timer.creation_done(seconds[-1])
        tenants.append(creation.tenant)
        methods[creation.method] += 1
    return seconds, methods


def quiet_command(name: str, **options: Any) -> Callable[[], object]:
    """call_command with the command's own report kept off our stdout (--json)."""
    from django.core.management import call_command

    return lambda: call_command(name, stdout=io.StringIO(), **options)


def migrate_schemas_pass(schema_names: list[str]) -> None:
    """What `migrate_schemas --tenant` does, over the given schemas rather than every row."""
    from django.core.management import load_command_class
    from django_tenants.migration_executors import get_executor

    command = load_command_class("django_tenants", "migrate_schemas")
    parser = command.create_parser("manage.py", "migrate_schemas")
    options = {
        **vars(parser.parse_args([])),
        "tenant": True,
        "interactive": False,
        "verbosity": 0,
        "skip_checks": True,
        "stdout": io.StringIO(),
    }
    get_executor(options["executor"])((), options).run_migrations(tenants=list(schema_names))


def timed(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def cleanup(tenants: list[Any]) -> float:
    from tenants.services import tenant_delete, tenant_purge

    started = time.perf_counter()
    for tenant in tenants:
        tenant_delete(tenant=tenant, actor="bench", confirm_slug=tenant.slug)
        tenant_purge(tenant=tenant, actor="bench")
    return time.perf_counter() - started


def machine() -> dict[str, object]:
    from django.db import connection

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg_version = cursor.fetchone()[0]
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": ram_gib,
        "postgresql": pg_version,
        "python": platform.python_version(),
    }


def print_report(results: dict[str, Any]) -> None:
    m, c = results["machine"], results["creation"]
    print(
        f"machine: {m['nproc']} CPUs, {m['cpu']}, {m['ram_gib']} GiB RAM, "
        f"PostgreSQL {m['postgresql']}, Python {m['python']}"
    )
    print(
        f"run {results['run_id']}: {c['count']} tenants created ({c['connection']} "
        "database connection), method: " + ", ".join(f"{k} x{v}" for k, v in c["methods"].items())
    )
    print(
        "tenant_create seconds per tenant: "
        + "  ".join(f"{key} {c[key]:.3f}" for key in ("median", "p95", "min", "max", "mean"))
    )
    if "median_first_10" in c:
        print(
            f"  median of the first 10 {c['median_first_10']:.3f}, "
            f"of the last 10 {c['median_last_10']:.3f}"
        )
    verdict = "met" if c["median"] < TARGET_MEDIAN_SECONDS else "MISSED"
    print(
        f"  first {c['first']:.3f}, total {c['total']:.2f}; target median < "
        f"{TARGET_MEDIAN_SECONDS} s: {verdict}"
    )
    if "phases" in c:
        print(f"  phases, seconds per tenant: {'median':>7} {'first':>7} {'last':>7}")
        for label, value in c["phases"].items():
            print(
                f"    {label:<55} {value['median']:7.3f} {value['first']:7.3f} {value['last']:7.3f}"
            )
    mig = results["migrations"]
    if mig["rows_without_schema"]:
        print(
            f"note: {mig['rows_without_schema']} tenant rows without a schema make "
            "`migrate_schemas --tenant` fail; timed its executor over the live schemas"
        )
    schemas, seconds = mig["migrate_schemas_tenant_schemas"], mig["migrate_schemas_tenant_seconds"]
    print(
        f"migrate_schemas --tenant ({schemas} tenant schemas): {seconds:.2f} s "
        f"({seconds / max(1, schemas):.3f} s/schema)"
    )
    print(
        f"migrate_portal before the run (public + template refresh): "
        f"{results['migrate_portal_first_seconds']:.2f} s"
    )
    print(
        f"migrate_portal ({mig['migrate_portal_tenant_schemas']} tenant schemas checked): "
        f"{mig['migrate_portal_seconds']:.2f} s"
    )
    if results.get("cleanup_seconds") is not None:
        print(f"delete + purge of {c['count']} tenants: {results['cleanup_seconds']:.2f} s")
    else:
        print(f"kept: tenants bench-{results['run_id']}-*, storage {results['storage_root']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    storage_root = Path(tempfile.mkdtemp(prefix="pacs-bench-storage-"))
    try:
        setup_django(storage_root)
    except BaseException:
        shutil.rmtree(storage_root, ignore_errors=True)
        raise

    from django.db import connection
    from django_tenants.utils import get_public_schema_name, schema_exists

    from portal.dbroles import as_owner
    from tenants.models import Tenant, TenantStatus

    run_id = secrets.token_hex(3)
    results: dict[str, Any] = {"run_id": run_id, "storage_root": str(storage_root)}
    created: list[Any] = []
    try:
        results["migrate_portal_first_seconds"] = timed(
            quiet_command("migrate_portal", verbosity=0)
        )
        results["machine"] = machine()

        with ExitStack() as stack:
            timer = stack.enter_context(phases()) if args.breakdown else None
            seconds, methods = create_tenants(
                run_id, 0, args.count, created, timer, args.fresh_connection
            )
        creation: dict[str, Any] = {
            "count": len(seconds),
            "methods": dict(methods),
            "connection": "fresh per tenant" if args.fresh_connection else "one for the run",
            "method": "+".join(sorted(methods)),
            "first": seconds[0],
            **summary(seconds),
            "seconds": seconds,
        }
        if len(seconds) >= 20:
            # Does the cost of a creation grow with the tenants made before it?
            creation["median_first_10"] = statistics.median(seconds[:10])
            creation["median_last_10"] = statistics.median(seconds[-10:])
        if timer is not None:
            creation["phases"] = {
                label: {"median": statistics.median(values), "first": values[0], "last": values[-1]}
                for label, values in sorted(timer.samples.items())
            }
        results["creation"] = creation

        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            create_tenants(run_id, args.count, args.profile, created)
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
            results["profile"] = out.getvalue()

        # The rows `migrate_schemas --tenant` walks (django-tenants uses Tenant.objects).
        rows = list(
            Tenant.objects.exclude(schema_name=get_public_schema_name()).values_list(
                "schema_name", flat=True
            )
        )
        live = [name for name in rows if schema_exists(name)]
        migrations: dict[str, Any] = {
            "migrate_schemas_tenant_schemas": len(live),
            "purged_tenant_rows": Tenant._base_manager.filter(status=TenantStatus.PURGED).count(),
            "rows_without_schema": len(rows) - len(live),
        }
        if len(live) < len(rows):
            # A row without a schema (a purged tenant, kept as a record) stops
            # `migrate_schemas --tenant` with MigrationSchemaMissing. Run the very same
            # per-schema pass, django-tenants' executor, over the schemas that exist instead.
            migrations["migrate_schemas_mode"] = "executor over live schemas"
            with as_owner():  # migrations run as the owner of the tables
                migrations["migrate_schemas_tenant_seconds"] = timed(
                    lambda: migrate_schemas_pass(live)
                )
        else:
            migrations["migrate_schemas_mode"] = "call_command"
            with as_owner():
                migrations["migrate_schemas_tenant_seconds"] = timed(
                    quiet_command("migrate_schemas", tenant=True, interactive=False, verbosity=0)
                )
        connection.set_schema_to_public()
        migrations["migrate_portal_tenant_schemas"] = (
            Tenant._base_manager.exclude(schema_name=get_public_schema_name())
            .exclude(status=TenantStatus.PURGED)
            .count()
        )
        migrations["migrate_portal_seconds"] = timed(quiet_command("migrate_portal", verbosity=0))
        results["migrations"] = migrations
    finally:
        connection.set_schema_to_public()
        if not args.keep:
            results["cleanup_seconds"] = cleanup(created)
            shutil.rmtree(storage_root, ignore_errors=True)

    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        print_report(results)
        if "profile" in results:
            print(results["profile"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
