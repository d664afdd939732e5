"""Benchmark ingest end to end, the portal against Orthanc side by side: same run, same files,
same clients, Orthanc at its best configuration, for every ingest channel.

Run it under portal.embedded (embedded PostgreSQL and Redis), from the repository root:

    .venv/bin/python -m portal.embedded --var .var/bench -- .venv/bin/python bench/ingest.py

`--help` describes the channels, the measurements and every option.
"""

import argparse
import http.client
import json
import os
import platform
import queue
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support import (
    command_line,
    cpu_and_memory,
    descendants,
    first_line,
    free_port,
    orthanc_config,
    orthanc_dicomweb_plugin,
    parent_pid,
    peak_rss_mib,
    process_cpu_seconds,
    reset_peak_rss,
    service,
    tree_cpu_seconds,
    wait_for_port,
)

ROOT = Path(__file__).resolve().parent.parent
# `python bench/ingest.py` puts bench/ first on sys.path, where bench/tenants.py would shadow
# the `tenants` app; the repository root goes there instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

CHANNELS = ("direct", "rest", "stow", "dimse", "dimse1")
TARGETS = ("portal", "orthanc")
ORTHANC = "/usr/sbin/Orthanc"
SERIES_PER_STUDY = 4
BOUNDARY = "bench-ingest-boundary-7f3a"
FAILED_SOP_SEQUENCE, REFERENCED_SOP_SEQUENCE = "00081198", "00081199"
HTTP_TIMEOUT = 300  # seconds for one request's answer

DESCRIPTION = """\
Generate synthetic CT instances (uncompressed, Explicit VR Little Endian, 16 bit, one study
in 4 series per set), then time their ingest end to end, from the first byte sent until every
instance is indexed and its file stored, into the portal and into Orthanc, one after the
other for each channel, on the same files with the same clients:

  direct  portal only, its own ceiling: studies.ingest staging (ingest_job_create,
          ingest_item_stage) and ingest_job_submit(run_now=True) in this process.
  rest    portal: POST /api/v1/ingest/ (multipart/form-data, --batch files per request,
          store-scoped API token, done when every instance is indexed) to gunicorn + a Celery
          worker; Orthanc: POST /instances, one file per request (its REST API takes one
          instance per POST). --clients concurrent clients, each on one persistent HTTP/1.1
          connection (http.client keep-alive, TCP_NODELAY), on both sides.
  stow    STOW-RS POST /dicom-web/studies (multipart/related; type="application/dicom",
          --batch files per request, --clients clients, keep-alive) to the tenant's site
          (Host <slug>.localhost, bearer token) and to Orthanc's DICOMweb plugin.
  dimse   DCMTK storescu, --clients processes at once, one association each over its share
          of the files (hard links in one folder per client), into `manage.py dicom_gateway`
          and into Orthanc; TCP_NODELAY=1 in storescu's and Orthanc's environment (DCMTK
          3.6.7's default is Nagle on; the gateway sets TCP_NODELAY itself).
  dimse1  the same with one storescu, one association for all files.

The portal runs as deployed, once per run: gunicorn with deploy/gunicorn.conf.py (gthread,
--web-workers x --web-threads), a Celery worker (-Q default -c --celery-concurrency) and the
DICOM gateway, DEBUG off, CONN_MAX_AGE=60 (deploy/.env.example), on free loopback ports;
each channel and set gets a fresh bench tenant, purged right after its measurement (unless
--keep). Orthanc (/usr/sbin/Orthanc) gets a fresh home per set and channel below the work
directory (same disk as the portal's storage):
SQLite index, StorageCompression false, OverwriteInstances false, SyncStorageArea true (the
portal fsyncs too), ConcurrentJobs/HttpThreadsCount/DicomThreadsCount at least --clients,
KeepAlive and TcpNoDelay true, DicomTcpNoDelay true (which 1.10.1 does not read: its DCMTK
takes TCP_NODELAY=1 from the environment, set too), the DICOMweb plugin, no authentication,
remote access allowed. Orthanc is done when GET /statistics counts every instance.

Measured per set, channel and server: seconds, instances/s, MB/s (bytes of the set's files),
server CPU seconds per instance (utime+stime of the server processes and of all their
children, live and ended, from /proc, before and after: gunicorn master and workers, Celery
master and pool, gateway, the PostgreSQL server and its backends, Redis, for `direct` this
process instead of the web processes; Orthanc's one process), and each process' peak RSS
(VmHWM, reset before each measurement), plus the ratios portal/Orthanc. Before each
measurement the portal's servers are left to go idle (background work of the previous one).
The machine facts (CPU, RAM, PostgreSQL, Python, DCMTK, Orthanc, load average) head the
report.

Output: a Markdown report on stdout (machine facts and one table per set, ready to paste into
BENCHMARKS.md), progress on stderr; --json FILE also writes every figure as JSON ("-":
JSON on stdout instead of the Markdown). --report FILE prints the Markdown of an earlier
--json FILE and exits. The exit status is 1 if any channel failed (its error is in the report
and the logs are kept). Needs DATABASE_URL and REDIS_URL: run it under portal.embedded.
"""

EPILOG = """\
examples:
  make bench-ingest BENCH_ARGS="--json .var/bench/ingest.json"
  .venv/bin/python -m portal.embedded --var .var/bench -- .venv/bin/python bench/ingest.py \\
      --count 100 --small-count 200 --clients 4          # a quick check, every channel
  ... bench/ingest.py --big-small-count 20000           # the issue's 20,000 small instances
  ... bench/ingest.py --channels rest,stow --targets orthanc --small-count 0
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/ingest.py",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sets = parser.add_argument_group("data sets (generated into the work directory)")
    sets.add_argument(
        "--count", type=int, default=2000, help="Large CT instances (default: 2000; 0 skips)."
    )
    sets.add_argument(
        "--size", type=int, default=512, help="Rows and columns of the large set (default: 512)."
    )
    sets.add_argument(
        "--small-count",
        type=int,
        default=2000,
        help="Small CT instances (default: 2000; 0 skips the small set).",
    )
    sets.add_argument(
        "--small-size",
        type=int,
        default=64,
        help="Rows and columns of the small sets (default: 64).",
    )
    sets.add_argument(
        "--big-small-count",
        type=int,
        default=0,
        help="A third set of this many small instances (--small-size), e.g. the issue's "
        "20000 (default: 0, no third set). Or pass --small-count 20000 instead.",
    )
    what = parser.add_argument_group("what to run")
    what.add_argument(
        "--channels",
        default=",".join(CHANNELS),
        help=f"Comma-separated, from {', '.join(CHANNELS)} (default: all).",
    )
    what.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help="Comma-separated servers, from portal, orthanc (default: both; the ratios need both).",
    )
    what.add_argument(
        "--clients",
        type=int,
        default=4,
        help="Concurrent clients for rest, stow and dimse: HTTP connections, storescu "
        "associations (default: 4).",
    )
    what.add_argument(
        "--batch",
        type=int,
        default=20,
        help="Files per request for the portal's REST and for STOW-RS on both sides "
        "(default: 20; Orthanc's REST always takes 1).",
    )
    what.add_argument(
        "--timeout",
        type=float,
        default=0,
        help="Seconds one channel may take before it counts as failed (default: 0, meaning "
        "300 + 0.2 s per instance, i.e. a floor of 5 instances/s).",
    )
    portal = parser.add_argument_group("portal servers")
    portal.add_argument(
        "--web-workers",
        type=int,
        default=2,
        help="gunicorn worker processes, WEB_CONCURRENCY (default: 2).",
    )
    portal.add_argument(
        "--web-threads",
        type=int,
        default=4,
        help="Threads per gunicorn worker, GUNICORN_THREADS (default: 4).",
    )
    portal.add_argument(
        "--celery-concurrency",
        type=int,
        default=2,
        help="Celery worker pool size, -c (default: 2).",
    )
    portal.add_argument(
        "--gateway-processes",
        type=int,
        default=2,
        help="dicom_gateway --processes: processes sharing the DICOM port (default: 2, one "
        "per core here).",
    )
    portal.add_argument(
        "--no-warmup",
        action="store_true",
        help="Skip the untimed warm-up: before the first set, --clients x --batch (at most "
        "100) tiny instances through each selected portal channel, into a tenant purged "
        "after it, so that no measurement pays for the servers' first imports.",
    )
    out = parser.add_argument_group("output and files")
    out.add_argument(
        "--json",
        metavar="FILE",
        help="Also write the results as JSON to FILE; '-' prints the JSON on stdout instead "
        "of the Markdown report.",
    )
    out.add_argument(
        "--report",
        metavar="FILE",
        help="Only print the Markdown report of an earlier --json FILE, then exit.",
    )
    out.add_argument(
        "--work",
        metavar="DIR",
        help="Where the data, the portal's storage, Orthanc's homes and the logs go (default: a "
        "new temporary directory, removed at the end unless --keep or a failure).",
    )
    out.add_argument(
        "--keep",
        action="store_true",
        help="Keep the bench tenants (not purged), Orthanc's homes and the work directory.",
    )
    args = parser.parse_args(argv)
    if args.report:
        return args
    args.channels = [c.strip() for c in args.channels.split(",") if c.strip()]
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = (set(args.channels) - set(CHANNELS)) | (set(args.targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown channels or targets: {', '.join(sorted(unknown))}")
    if not args.channels or not args.targets:
        parser.error("--channels and --targets must name at least one")
    if min(args.count, args.small_count, args.big_small_count) < 0:
        parser.error("counts must not be negative")
    if not (args.count or args.small_count or args.big_small_count):
        parser.error("every set is empty")
    if min(args.clients, args.batch, args.web_workers, args.web_threads) < 1:
        parser.error("--clients, --batch, --web-workers and --web-threads must be at least 1")
    if args.celery_concurrency < 1:
        parser.error("--celery-concurrency must be at least 1")
    return args


def say(text: str) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"[{time.strftime('%H:%M:%S')}] {text} (load {load})", file=sys.stderr, flush=True)


class ChannelError(RuntimeError):
    """A channel that did not ingest everything, or whose servers refused or failed."""


# -- synthetic data ---------------------------------------------------------------------------


def generate(folder: Path, count: int, size: int, label: str) -> int:
    """One study of `count` CT instances in a few series; returns the total bytes written."""
    import numpy as np
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    rng = np.random.default_rng(4)
    base = (rng.integers(0, 1500, size=(size, size), dtype=np.uint16) + 24).astype(np.uint16)
    study_uid = generate_uid()
    series_uids = [generate_uid() for _ in range(SERIES_PER_STUDY)]
    total = 0
    for i in range(count):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"{i:06d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uids[i % SERIES_PER_STUDY]
        ds.PatientName = f"Bench^{label}"
        ds.PatientID = f"BENCH-{label}"
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyDate = ds.SeriesDate = "20240101"
        ds.StudyTime = "120000"
        ds.AccessionNumber = f"ACC{label}"[:16]
        ds.StudyID = "1"
        ds.StudyDescription = f"Bench ingest {label}"
        ds.SeriesDescription = f"Series {i % SERIES_PER_STUDY + 1}"
        ds.Modality = "CT"
        ds.SeriesNumber = i % SERIES_PER_STUDY + 1
        ds.InstanceNumber = i // SERIES_PER_STUDY + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelData = np.roll(base, i, axis=0).tobytes()
        ds.save_as(folder / f"{i:06d}.dcm", enforce_file_format=True)
        total += (folder / f"{i:06d}.dcm").stat().st_size
    return total


def split_folders(files: list[Path], target: Path, parts: int) -> list[Path]:
    """`parts` folders below `target` sharing the files round-robin, as hard links (the same
    inodes, so the same page cache), one per storescu."""
    folders = [target / f"{k:02d}" for k in range(parts)]
    for folder in folders:
        folder.mkdir(parents=True)
    for i, path in enumerate(files):
        os.link(path, folders[i % parts] / path.name)
    return [f for f in folders if any(f.iterdir())]


# -- environment ------------------------------------------------------------------------------


def setup_django(storage_root: Path) -> None:
    """The bench process and every server it starts share these settings: production-like
    (DEBUG off, so no query log), tenants on subdomains of localhost."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ["DEBUG"] = "false"
    if len(os.environ.get("SECRET_KEY", "")) < 32:
        os.environ["SECRET_KEY"] = secrets.token_urlsafe(48)
    os.environ["ALLOWED_HOSTS"] = "localhost,.localhost,127.0.0.1"
    os.environ["SECURE_SSL_REDIRECT"] = "false"  # plain HTTP on loopback, no TLS proxy
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    # As deploy/.env.example runs it: connections kept between requests and tasks.
    os.environ.setdefault("CONN_MAX_AGE", "60")
    os.environ["PORTAL_BASE_DOMAIN"] = "localhost"
    os.environ["PORTAL_TENANT_ROUTING"] = "subdomain"
    os.environ["PORTAL_STORAGE_ROOT"] = str(storage_root)
    import django

    django.setup()


def channel_timeout(args: argparse.Namespace, count: int) -> float:
    return args.timeout or 300 + 0.2 * count


# -- server processes: CPU and memory ---------------------------------------------------------


@dataclass
class Proc:
    """A server process whose CPU time and peak memory count; `tree` adds its descendants."""

    name: str
    pid: int
    tree: bool = True

    def pids(self) -> list[int]:
        return descendants(self.pid) if self.tree else [self.pid]

    def cpu(self) -> float:
        if self.tree:
            return tree_cpu_seconds(self.pid)
        return process_cpu_seconds(self.pid, children=False)


def cpu_by_name(procs: list[Proc]) -> dict[str, float]:
    found: dict[str, float] = {}
    for proc in procs:
        found[proc.name] = found.get(proc.name, 0.0) + proc.cpu()
    return found


def peaks_by_name(procs: list[Proc]) -> dict[str, dict[str, float]]:
    """Peak RSS MiB of every live process, by server name and `pid command`."""
    found: dict[str, dict[str, float]] = {}
    for proc in procs:
        for pid, mib in peak_rss_mib(proc.pids()).items():
            found.setdefault(proc.name, {})[f"{pid} {command_line(pid)[:70]}"] = mib
    return found


def settle(procs: list[Proc], *, window: float = 0.5, idle: float = 0.1, limit: float = 60):
    """Wait until the servers use less than `idle` of a CPU over `window` seconds (the
    previous measurement's background work, autovacuum, purges); returns the seconds waited."""
    started = time.monotonic()
    before = sum(cpu_by_name(procs).values())
    while time.monotonic() - started < limit:
        time.sleep(window)
        now = sum(cpu_by_name(procs).values())
        if now - before < idle * window:
            break
        before = now
    return round(time.monotonic() - started, 1)


def postgres_server_pid() -> int | None:
    """The PostgreSQL postmaster (parent of this connection's backend), if it runs here."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = int(cursor.fetchone()[0])
    parent = parent_pid(backend)
    if parent and "postgres" in command_line(parent):
        return parent
    return None


def redis_server_pid() -> int | None:
    """The Redis server's pid as it reports it, if that process runs here."""
    try:
        import redis

        pid = int(redis.Redis.from_url(os.environ["REDIS_URL"]).info("server")["process_id"])
    except Exception:  # only a measurement is lost
        return None
    return pid if "redis" in command_line(pid) else None


# -- tenants ----------------------------------------------------------------------------------


class Tenants:
    """The bench tenants of this run, each purged after its measurement unless kept."""

    def __init__(self, run_id: str, keep: bool) -> None:
        self.run_id, self.keep = run_id, keep
        self.created: list[Any] = []
        self.purged: set[str] = set()

    def new(self, label: str) -> Any:
        from django.db import connection

        from tenants.services import tenant_create

        connection.set_schema_to_public()
        n = len(self.created)
        slug = f"bench-ingest-{self.run_id}-{n}"
        creation = tenant_create(
            slug=slug,
            name=f"Bench ingest {label}",
            admin_email=f"admin@{slug}.example.org",
            created_by="bench",
            ae_title=f"BI{self.run_id}{n}".upper(),
        )
        self.created.append(creation.tenant)
        return creation.tenant

    def purge(self, tenant: Any) -> None:
        from django.db import connection

        from tenants.services import tenant_delete, tenant_purge

        if self.keep or tenant.slug in self.purged:
            return
        connection.set_schema_to_public()
        tenant.refresh_from_db()
        tenant = tenant_delete(tenant=tenant, actor="bench", confirm_slug=tenant.slug)
        tenant_purge(tenant=tenant, actor="bench")
        self.purged.add(tenant.slug)

    def purge_all(self) -> list[str]:
        """Purge what is left; returns the slugs that could not be purged."""
        failed = []
        for tenant in self.created:
            try:
                self.purge(tenant)
            except Exception as error:  # purge the others, then report
                print(f"could not purge {tenant.slug}: {error}", file=sys.stderr)
                failed.append(tenant.slug)
        return failed


def api_token(tenant: Any) -> str:
    from django_tenants.utils import tenant_context

    from accounts.models import TokenScope, User
    from accounts.services import api_token_create

    with tenant_context(tenant):
        admin = User.objects.get(username="admin")
        _, raw = api_token_create(user=admin, name="bench ingest", scope=TokenScope.STORE)
    return str(raw)


def indexed(tenant: Any) -> tuple[int, int]:
    """Instances indexed and bytes stored in the tenant."""
    from django.db.models import Count, Sum
    from django_tenants.utils import tenant_context

    from studies.models import Instance

    with tenant_context(tenant):
        row = Instance.objects.aggregate(n=Count("pk"), size=Sum("size_bytes"))
        return int(row["n"]), int(row["size"] or 0)


def wait_until(count: Callable[[], int], expected: int, started: float, deadline: float) -> float:
    """Poll `count()` until it reaches `expected`; returns perf_counter() then. The interval
    is 1 % of the time elapsed so far (20 ms to 0.5 s): the timing stays within about 1 %
    without loading the servers."""
    while True:
        now = time.perf_counter()
        found = count()
        if found >= expected:
            return now
        if time.monotonic() > deadline:
            raise ChannelError(f"only {found} of {expected} instances stored by the timeout")
        time.sleep(min(0.5, max(0.02, (now - started) * 0.01)))


# -- HTTP clients -----------------------------------------------------------------------------


class Connection(http.client.HTTPConnection):
    """One persistent HTTP/1.1 connection (http.client reconnects by itself if the server
    closes it; `opened` counts how often it connected) with TCP_NODELAY."""

    def __init__(self, port: int) -> None:
        super().__init__("127.0.0.1", port, timeout=HTTP_TIMEOUT)
        self.opened = 0

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.opened += 1


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: Callable[[], bytes]  # built by the client thread, as a real client would
    check: Callable[[int, bytes], Any]  # raises on a refusal; returns what to collect


def send_http(port: int, requests: list[Request], clients: int, deadline: float):
    """`clients` threads, each on one kept-alive connection, take the next request from a
    shared queue until none is left. Returns (collected check() results, connections opened,
    seconds until the last answer)."""
    work: queue.SimpleQueue[Request] = queue.SimpleQueue()
    for request in requests:
        work.put(request)
    collected: list[Any] = []
    opened: list[int] = []
    errors: list[BaseException] = []
    failed = threading.Event()

    def client() -> None:
        connection = Connection(port)
        try:
            while not failed.is_set():
                if time.monotonic() > deadline:
                    raise ChannelError("requests still unsent at the timeout")
                try:
                    request = work.get_nowait()
                except queue.Empty:
                    return
                connection.request(
                    "POST", request.path, body=request.body(), headers=request.headers
                )
                response = connection.getresponse()
                payload = response.read()
                if response.will_close:
                    connection.close()
                collected.append(request.check(response.status, payload))
        except BaseException as error:  # reported after the join
            errors.append(error)
            failed.set()
        finally:
            opened.append(connection.opened)
            connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sent = time.perf_counter() - started
    if errors:
        if isinstance(errors[0], ChannelError):
            raise errors[0]
        raise ChannelError(f"{type(errors[0]).__name__}: {errors[0]}") from errors[0]
    return collected, sum(opened), sent


def multipart_form(files: list[Path]) -> bytes:
    parts = []
    for path in files:
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; '
            f'filename="{path.name}"\r\nContent-Type: application/dicom\r\n\r\n'.encode()
        )
        parts.append(path.read_bytes())
        parts.append(b"\r\n")
    parts.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(parts)


def multipart_related(files: list[Path]) -> bytes:
    parts = []
    for path in files:
        parts.append(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        parts.append(path.read_bytes())
        parts.append(b"\r\n")
    parts.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(parts)


def batches(files: list[Path], size: int) -> list[list[Path]]:
    return [files[i : i + size] for i in range(0, len(files), size)]


def refused(what: str, status: int, payload: bytes) -> ChannelError:
    return ChannelError(f"{what} answered {status}: {payload[:400]!r}")


def rest_portal_requests(files: list[Path], batch: int, host: str, token: str) -> list[Request]:
    headers = {
        "Host": host,
        "Authorization": f"Bearer {token}",
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
    }

    def check(status: int, payload: bytes) -> int:
        if status != 202:
            raise refused("POST /api/v1/ingest/", status, payload)
        return int(json.loads(payload)["id"])

    return [
        Request("/api/v1/ingest/", headers, lambda b=b: multipart_form(b), check)
        for b in batches(files, batch)
    ]


def rest_orthanc_requests(files: list[Path]) -> list[Request]:
    headers = {"Content-Type": "application/dicom"}

    def check(status: int, payload: bytes) -> None:
        if status != 200:
            raise refused("POST /instances", status, payload)
        answer = json.loads(payload)
        if answer.get("Status") != "Success":
            raise ChannelError(f"POST /instances: {answer}")

    return [Request("/instances", headers, path.read_bytes, check) for path in files]


def stow_requests(files: list[Path], batch: int, headers: dict[str, str]) -> list[Request]:
    headers = {
        **headers,
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
        "Accept": "application/dicom+json",
    }

    def checker(expected: int) -> Callable[[int, bytes], None]:
        def check(status: int, payload: bytes) -> None:
            if status != 200:
                raise refused("STOW-RS POST /dicom-web/studies", status, payload)
            answer = json.loads(payload)
            failed = answer.get(FAILED_SOP_SEQUENCE, {}).get("Value", [])
            stored = answer.get(REFERENCED_SOP_SEQUENCE, {}).get("Value", [])
            if failed or len(stored) != expected:
                raise ChannelError(
                    f"STOW-RS stored {len(stored)} of {expected}, failed {failed[:2]}"
                )

        return check

    return [
        Request("/dicom-web/studies", headers, lambda b=b: multipart_related(b), checker(len(b)))
        for b in batches(files, batch)
    ]


# -- DIMSE clients ----------------------------------------------------------------------------


def send_storescu(
    ae_title: str, port: int, folders: list[Path], logs: Path, label: str, deadline: float
) -> float:
    """One storescu per folder at once (`+sd` names the folder; one association each, as
    every file is CT in Explicit VR Little Endian), TCP_NODELAY=1 in their environment;
    returns the seconds until the last one exited."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    processes: list[tuple[subprocess.Popen[bytes], Path]] = []
    started = time.perf_counter()
    try:
        for k, folder in enumerate(folders):
            log = logs / f"storescu-{label}-{k}.log"
            command = ["storescu", "-aec", ae_title, "+sd", "127.0.0.1", str(port), str(folder)]
            with log.open("ab") as out:
                process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
            processes.append((process, log))
        for process, log in processes:
            try:
                process.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise ChannelError(f"storescu still sending at the timeout ({log})") from None
            if process.returncode != 0:
                tail = log.read_text(errors="replace")[-600:]
                raise ChannelError(f"storescu exited with {process.returncode}: {tail}")
        return time.perf_counter() - started
    finally:
        for process, _ in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


# -- Orthanc ----------------------------------------------------------------------------------


def orthanc_best_settings(clients: int) -> dict[str, Any]:
    """Orthanc's settings for ingest at its best, beyond ports and directories."""
    return dict(
        StorageCompression=False,
        OverwriteInstances=False,  # the default, explicit
        SyncStorageArea=True,  # the default since 1.7.4; the portal fsyncs every file too
        ConcurrentJobs=max(2, clients),
        HttpThreadsCount=max(50, clients),
        DicomThreadsCount=max(4, clients),
        KeepAlive=True,
        TcpNoDelay=True,
        # Not read by Orthanc 1.10.1 (absent from its default configuration): its DICOM
        # server, DCMTK's, takes TCP_NODELAY=1 from the environment instead (set too).
        DicomTcpNoDelay=True,
        RemoteAccessAllowed=True,
        AuthenticationEnabled=False,
        Plugins=[orthanc_dicomweb_plugin()],
        DicomWeb={"Enable": True, "Root": "/dicom-web/"},
    )


def orthanc_best_config(home: Path, http_port: int, dicom_port: int, clients: int) -> Path:
    return orthanc_config(
        home, http_port=http_port, dicom_port=dicom_port, **orthanc_best_settings(clients)
    )


def orthanc_get(port: int, path: str) -> Any:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise refused(f"Orthanc GET {path}", response.status, payload)
    return json.loads(payload)


@contextmanager
def orthanc_server(home: Path, logs: Path, clients: int) -> Iterator[tuple[Any, int, int]]:
    """A fresh Orthanc with its index and storage in `home`, stopped on exit; yields the
    process and its HTTP and DICOM ports."""
    http_port, dicom_port = free_port(), free_port()
    home.mkdir(parents=True)
    config = orthanc_best_config(home, http_port, dicom_port, clients)
    log = logs / f"orthanc-{home.name}.log"
    with service([ORTHANC, str(config)], log, http_port, env={"TCP_NODELAY": "1"}) as process:
        wait_for_port(dicom_port, process)
        plugins = orthanc_get(http_port, "/plugins")
        if "dicom-web" not in plugins:
            raise ChannelError(f"Orthanc did not load its DICOMweb plugin ({plugins}); see {log}")
        yield process, http_port, dicom_port


def orthanc_count(port: int) -> int:
    return int(orthanc_get(port, "/statistics")["CountInstances"])


# -- one measurement --------------------------------------------------------------------------


@dataclass
class Context:
    args: argparse.Namespace
    work: Path
    logs: Path
    tenants: Tenants
    web_port: int = 0
    gateway_port: int = 0
    portal_procs: list[Proc] = field(default_factory=list)  # every portal server
    postgres: list[Proc] = field(default_factory=list)
    services: dict[str, Any] = field(default_factory=dict)  # name: Popen, to check alive


@dataclass
class DataSet:
    name: str
    count: int
    size: int
    folder: Path
    files: list[Path]
    bytes: int
    split: list[Path]  # --clients folders of hard links, for dimse


def measure(
    procs: list[Proc], send: Callable[[float], dict[str, Any]], done: Callable[..., float]
) -> dict[str, Any]:
    """Reset the peaks, read the CPU, send (from the first byte), wait until done, read the
    CPU and the peaks again."""
    reset_peak_rss([pid for proc in procs for pid in proc.pids()])
    own = os.times()
    cpu_before = cpu_by_name(procs)
    load = list(os.getloadavg())
    started = time.perf_counter()
    row = send(started)
    ended = done(started)
    cpu_after = cpu_by_name(procs)
    own_after = os.times()
    cpu = {name: round(cpu_after[name] - cpu_before.get(name, 0.0), 2) for name in cpu_after}
    # The clients: this process' HTTP threads, or the storescu processes it has waited for
    # (user, system, children's user, children's system).
    client = sum(own_after[:4]) - sum(own[:4])
    row.update(
        seconds=ended - started,
        server_cpu_seconds=round(sum(cpu.values()), 2),
        cpu_seconds_by_server=cpu,
        client_cpu_seconds=round(client, 2),
        peak_rss_mib=peaks_by_name(procs),
        loadavg_before=load,
    )
    if row.get("connections", 0) > args_clients(row):
        say(f"  {row['connections']} connections for {row['requests']} requests: keep-alive lost")
    return row


def args_clients(row: dict[str, Any]) -> int:
    """How many connections keep-alive allows: one per client (fewer if fewer requests)."""
    return min(row.get("clients", 0), row.get("requests", 0))


def check_services(ctx: Context, needed: list[str]) -> None:
    for name in needed:
        process = ctx.services.get(name)
        if process is not None and process.poll() is not None:
            raise ChannelError(f"{name} exited with {process.returncode}; see {ctx.logs}")


def run_portal(ctx: Context, data: DataSet, channel: str) -> dict[str, Any]:
    from django_tenants.utils import tenant_context

    args, count = ctx.args, data.count
    tenant = ctx.tenants.new(f"{data.name} {channel}")
    try:
        host = f"{tenant.slug}.localhost"
        token = api_token(tenant) if channel in {"rest", "stow"} else ""
        timeout = channel_timeout(args, count)
        collected: list[Any] = []

        def done(started: float) -> float:
            return wait_until(lambda: indexed(tenant)[0], count, started, deadline)

        if channel == "direct":
            from studies.ingest import ingest_item_stage, ingest_job_create, ingest_job_submit

            procs = [Proc("bench process", os.getpid(), tree=False), *ctx.postgres]

            def send(started: float) -> dict[str, Any]:
                with tenant_context(tenant):
                    job = ingest_job_create(source="folder", description="bench direct")
                    for path in data.files:
                        with path.open("rb") as stream:
                            ingest_item_stage(job=job, name=path.name, stream=stream)
                    job = ingest_job_submit(job=job, run_now=True)
                return {"job_status": str(job.status)}

        elif channel in {"rest", "stow"}:
            check_services(ctx, ["gunicorn"] + (["celery"] if channel == "rest" else []))
            procs = ctx.portal_procs
            if channel == "rest":
                requests = rest_portal_requests(data.files, args.batch, host, token)
            else:
                auth = {"Host": host, "Authorization": f"Bearer {token}"}
                requests = stow_requests(data.files, args.batch, auth)

            def send(started: float) -> dict[str, Any]:
                found, opened, sent = send_http(ctx.web_port, requests, args.clients, deadline)
                collected.extend(found)
                return {
                    "requests": len(requests),
                    "clients": args.clients,
                    "connections": opened,
                    "sent_seconds": sent,
                }

        else:
            check_services(ctx, ["gateway"])
            procs = ctx.portal_procs
            folders = data.split if channel == "dimse" else [data.folder]

            def send(started: float) -> dict[str, Any]:
                label = f"portal-{data.name}-{channel}"
                sent = send_storescu(
                    tenant.ae_title, ctx.gateway_port, folders, ctx.logs, label, deadline
                )
                return {"associations": len(folders), "sent_seconds": sent}

        settled = settle(ctx.portal_procs)
        deadline = time.monotonic() + timeout
        row = measure(procs, send, done)
        row["settle_seconds"] = settled
        row["instances"], row["stored_bytes"] = indexed(tenant)
        row["tenant"] = tenant.slug
        if channel == "rest":
            row.update(rest_jobs(tenant, collected, deadline))
        return row
    finally:
        try:
            ctx.tenants.purge(tenant)
        except Exception as error:  # purge_all() tries again at the end
            say(f"could not purge {tenant.slug} yet: {error}")


def rest_jobs(tenant: Any, job_ids: list[int], deadline: float) -> dict[str, Any]:
    """The REST jobs' statuses once every instance is indexed (waiting a little for their
    bookkeeping to close them); not part of the timing."""
    from django_tenants.utils import tenant_context

    from studies.models import IngestJob

    closed = {"done", "failed"}
    limit = min(deadline, time.monotonic() + 60)
    while True:
        with tenant_context(tenant):
            statuses = list(
                IngestJob.objects.filter(pk__in=job_ids).values_list("status", flat=True)
            )
        if set(statuses) <= closed or time.monotonic() > limit:
            break
        time.sleep(0.2)
    summary = {status: statuses.count(status) for status in sorted(set(statuses))}
    if "failed" in summary:
        raise ChannelError(f"REST jobs failed: {summary}")
    return {"jobs": len(job_ids), "job_statuses": summary}


def run_orthanc(ctx: Context, data: DataSet, channel: str) -> dict[str, Any]:
    args, count = ctx.args, data.count
    home = ctx.work / "orthanc" / f"{data.name}-{channel}"
    try:
        with orthanc_server(home, ctx.logs, args.clients) as (process, http_port, dicom_port):
            procs = [Proc("orthanc", process.pid)]
            requests: list[Request] = []
            if channel == "rest":
                requests = rest_orthanc_requests(data.files)
            elif channel == "stow":
                requests = stow_requests(data.files, args.batch, {})

            def send(started: float) -> dict[str, Any]:
                if channel in {"rest", "stow"}:
                    _, opened, sent = send_http(http_port, requests, args.clients, deadline)
                    return {
                        "requests": len(requests),
                        "clients": args.clients,
                        "connections": opened,
                        "sent_seconds": sent,
                    }
                folders = data.split if channel == "dimse" else [data.folder]
                label = f"orthanc-{data.name}-{channel}"
                sent = send_storescu("ORTHANC", dicom_port, folders, ctx.logs, label, deadline)
                return {"associations": len(folders), "sent_seconds": sent}

            def done(started: float) -> float:
                return wait_until(lambda: orthanc_count(http_port), count, started, deadline)

            settled = settle(ctx.portal_procs)  # the portal's tail must not compete
            deadline = time.monotonic() + channel_timeout(args, count)
            row = measure(procs, send, done)
            row["settle_seconds"] = settled
            row["instances"] = orthanc_count(http_port)
            row["orthanc_statistics"] = orthanc_get(http_port, "/statistics")
        storage = home / "storage"
        row["stored_bytes"] = sum(f.stat().st_size for f in storage.rglob("*") if f.is_file())
        return row
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


# -- the portal's servers ---------------------------------------------------------------------


def start_portal(ctx: Context, stack: ExitStack, channels: list[str]) -> dict[str, list[str]]:
    """gunicorn (deploy/gunicorn.conf.py), a Celery worker and the gateway, as needed by the
    channels; each is stopped with its process group when `stack` closes."""
    args, python = ctx.args, sys.executable
    commands: dict[str, list[str]] = {}
    if {"rest", "stow"} & set(channels):
        ctx.web_port = free_port()
        commands["gunicorn"] = [python, "-m", "gunicorn", "--config", "deploy/gunicorn.conf.py"]
        commands["gunicorn"] += ["--bind", f"127.0.0.1:{ctx.web_port}", "portal.wsgi"]
        env = {"WEB_CONCURRENCY": str(args.web_workers), "GUNICORN_THREADS": str(args.web_threads)}
        web = stack.enter_context(
            service(commands["gunicorn"], ctx.logs / "gunicorn.log", ctx.web_port, env=env)
        )
        ctx.services["gunicorn"] = web
        ctx.portal_procs.append(Proc("gunicorn", web.pid))
    if "rest" in channels:
        commands["celery"] = [python, "-m", "celery", "-A", "portal", "worker", "-Q", "default"]
        commands["celery"] += ["-c", str(args.celery_concurrency), "-l", "INFO"]
        commands["celery"] += ["-n", f"bench-ingest-{ctx.tenants.run_id}@%h"]
        worker = stack.enter_context(service(commands["celery"], ctx.logs / "celery.log"))
        wait_for_log(ctx.logs / "celery.log", "ready.", worker)
        ctx.services["celery"] = worker
        ctx.portal_procs.append(Proc("celery", worker.pid))
    if {"dimse", "dimse1"} & set(channels):
        ctx.gateway_port = free_port()
        commands["gateway"] = [python, "manage.py", "dicom_gateway", "--host", "127.0.0.1"]
        commands["gateway"] += ["--port", str(ctx.gateway_port)]
        commands["gateway"] += ["--processes", str(args.gateway_processes)]
        gateway = stack.enter_context(
            service(commands["gateway"], ctx.logs / "gateway.log", ctx.gateway_port)
        )
        ctx.services["gateway"] = gateway
        ctx.portal_procs.append(Proc("gateway", gateway.pid))
    pg, redis_pid = postgres_server_pid(), redis_server_pid()
    if pg:
        ctx.postgres = [Proc("postgres", pg)]
    ctx.portal_procs += ctx.postgres
    if redis_pid:
        ctx.portal_procs.append(Proc("redis", redis_pid))
    return commands


def wait_for_log(log: Path, needle: str, process: subprocess.Popen[bytes], timeout: float = 90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited: {log.read_text()[-2000:]}")
        if needle in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{needle!r} not in {log} after {timeout} s")


# -- report -----------------------------------------------------------------------------------


def machine(work: Path) -> dict[str, Any]:
    from django.db import connection

    cpu, ram_gib = cpu_and_memory()
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg = cursor.fetchone()[0]
    versions = {}
    for name in ("gunicorn", "celery", "pynetdicom", "pydicom", "django"):
        try:
            versions[name] = __import__(name).__version__
        except (ImportError, AttributeError):
            versions[name] = ""
    filesystem = first_line(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", str(work)])
    commit = first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = first_line(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": ram_gib,
        "kernel": platform.release(),
        "postgresql": pg,
        "python": platform.python_version(),
        "dcmtk": first_line(["storescu", "--version"]).strip("$ ").replace("dcmtk: ", "DCMTK "),
        "orthanc": first_line([ORTHANC, "--version"]).replace(ORTHANC, "Orthanc"),
        "orthanc_dicomweb": first_line(
            ["dpkg-query", "-W", "-f", "${Package} ${Version}", "orthanc-dicomweb"]
        ),
        "packages": versions,
        "work_filesystem": filesystem,
        "commit": commit + (" + uncommitted changes" if dirty else ""),
        "loadavg_at_start": list(os.getloadavg()),
    }


CHANNEL_LABELS = {
    "direct": "direct (in-process pipeline)",
    "rest": "REST ({clients} clients; portal {batch}/request, Orthanc 1/request)",
    "stow": "STOW-RS ({clients} clients, {batch}/request)",
    "dimse": "DIMSE (storescu, {clients} associations)",
    "dimse1": "DIMSE (storescu, 1 association)",
}
SHORT_NAMES = {"gunicorn": "web", "celery": "worker", "postgres": "pg", "bench process": "bench"}


def rss_summary(peaks: dict[str, dict[str, float]]) -> str:
    """`web 118 (3)`: the largest peak RSS MiB of each server's processes, and how many."""
    parts = []
    for name, by_process in peaks.items():
        if not by_process:
            continue
        largest = max(by_process.values())
        count = f" ({len(by_process)})" if len(by_process) > 1 else ""
        parts.append(f"{SHORT_NAMES.get(name, name)} {largest:.0f}{count}")
    return ", ".join(parts)


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else ""


def render_markdown(results: dict[str, Any]) -> str:
    m, a = results["machine"], results["args"]
    lines = [
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_gib']} GiB RAM, kernel "
        f"{m['kernel']}, work directory on {m['work_filesystem'] or '?'}; PostgreSQL "
        f"{m['postgresql']}, Python {m['python']}, {m['dcmtk']}, {m['orthanc']} with "
        f"{m['orthanc_dicomweb']}; code {m['commit'] or '?'}; load average at start "
        + " ".join(f"{x:.2f}" for x in m["loadavg_at_start"])
        + ".",
        "",
        f"Portal: gunicorn deploy/gunicorn.conf.py {a['web_workers']} workers x "
        f"{a['web_threads']} threads, Celery worker -c {a['celery_concurrency']}, "
        f"dicom_gateway --processes {a.get('gateway_processes', 1)}, DEBUG off, "
        "CONN_MAX_AGE=60. Orthanc: fresh SQLite index and storage "
        "per row, StorageCompression off, SyncStorageArea on, DICOMweb plugin, TCP_NODELAY.",
        "",
        "End to end, from the first byte sent until every instance is indexed and stored. "
        "CPU: server processes and their children (/proc utime+stime), ms per instance. "
        "Peak RSS: largest VmHWM MiB per server (processes). Ratios: portal/Orthanc "
        "(rate > 1: the portal is faster; CPU > 1: the portal spends more).",
    ]
    for data in results["sets"].values():
        lines += [
            "",
            f"{data['count']:,} CT {data['size']}x{data['size']} "
            f"({data['bytes'] / 1e6:,.1f} MB, {data['bytes'] / data['count'] / 1e3:,.0f} kB "
            "each)",
            "",
            "| channel | server | seconds | instances/s | MB/s | CPU ms/inst | peak RSS MiB "
            "| rate ratio | CPU ratio |",
            "|---|---|---:|---:|---:|---:|---|---:|---:|",
        ]
        splits: list[str] = []
        for channel, sides in data["channels"].items():
            label = CHANNEL_LABELS[channel].format(**a)
            portal, orthanc = sides.get("portal"), sides.get("orthanc")
            for target, row in (("portal", portal), ("Orthanc", orthanc)):
                if row is None:
                    continue
                if "error" in row:
                    error = " ".join(row["error"].replace("|", "/").split())[:200]
                    lines.append(f"| {label} | {target} | failed: {error} |||||||")
                    label = ""
                    continue
                ratios = ["", ""]
                if target == "portal" and orthanc and "error" not in orthanc:
                    ratios = [
                        ratio(row["instances_per_second"], orthanc["instances_per_second"]),
                        ratio(row["cpu_ms_per_instance"], orthanc["cpu_ms_per_instance"]),
                    ]
                split = ", ".join(
                    f"{SHORT_NAMES.get(name, name)} {seconds:.2f}"
                    for name, seconds in row["cpu_seconds_by_server"].items()
                    if seconds > 0
                )
                splits.append(f"{channel} {target}: {split}")
                lines.append(
                    f"| {label} | {target} | {row['seconds']:.2f} | "
                    f"{row['instances_per_second']:.1f} | {row['mb_per_second']:.1f} | "
                    f"{row['cpu_ms_per_instance']:.1f} | {rss_summary(row['peak_rss_mib'])} | "
                    f"{ratios[0]} | {ratios[1]} |"
                )
                label = ""
        if splits:
            lines += ["", "Server CPU seconds by process tree: " + "; ".join(splits) + "."]
    if results.get("failures"):
        lines += ["", "Failed: " + "; ".join(results["failures"])]
    return "\n".join(lines)


def finish_row(row: dict[str, Any], data: DataSet) -> None:
    seconds = row["seconds"]
    row["instances_per_second"] = row["instances"] / seconds
    row["mb_per_second"] = data.bytes / 1e6 / seconds
    row["cpu_ms_per_instance"] = row["server_cpu_seconds"] * 1000 / data.count
    if row["instances"] != data.count:
        raise ChannelError(f"{row['instances']} of {data.count} instances indexed")


# -- main -------------------------------------------------------------------------------------


def make_set(ctx: Context, name: str, count: int, size: int) -> DataSet:
    folder = ctx.work / "data" / name
    total = generate(folder, count, size, f"{name}{ctx.tenants.run_id}")
    files = sorted(folder.iterdir())
    split = []
    if "dimse" in ctx.args.channels:
        split = split_folders(files, ctx.work / "data" / f"{name}-split", ctx.args.clients)
    return DataSet(name, count, size, folder, files, total, split)


def warm_up(ctx: Context) -> dict[str, Any]:
    """Each portal channel once on a few tiny instances (untimed figures, kept in the JSON)."""
    args = ctx.args
    data = make_set(ctx, "warmup", min(100, args.clients * args.batch), 16)
    done: dict[str, Any] = {}
    try:
        for channel in args.channels:
            say(f"warm-up, {channel}")
            try:
                row = run_portal(ctx, data, channel)
                done[channel] = {"seconds": round(row["seconds"], 2), "instances": row["instances"]}
            except Exception as error:  # the measurement will fail and say why
                done[channel] = {"error": f"{type(error).__name__}: {error}"}
    finally:
        shutil.rmtree(ctx.work / "data", ignore_errors=True)
    return done


def run(args: argparse.Namespace, ctx: Context, results: dict[str, Any]) -> None:
    sets = [("large", args.count, args.size), ("small", args.small_count, args.small_size)]
    sets.append(("small-many", args.big_small_count, args.small_size))
    with ExitStack() as stack:
        if "portal" in args.targets:
            say("starting the portal's servers")
            results["portal_commands"] = start_portal(ctx, stack, args.channels)
            results["portal_servers"] = {p.name: p.pid for p in ctx.portal_procs}
            if not args.no_warmup:
                results["warmup"] = warm_up(ctx)
        for name, count, size in sets:
            if not count:
                continue
            say(f"set {name}: generating {count} CT instances of {size}x{size}")
            started = time.perf_counter()
            data = make_set(ctx, name, count, size)
            entry: dict[str, Any] = {
                "count": count,
                "size": size,
                "bytes": data.bytes,
                "generate_seconds": round(time.perf_counter() - started, 1),
                "channels": {},
            }
            results["sets"][name] = entry
            for channel in args.channels:
                sides = entry["channels"].setdefault(channel, {})
                for target in args.targets:
                    if channel == "direct" and target == "orthanc":
                        continue
                    say(f"set {name}, {channel}, {target}")
                    try:
                        runner = run_portal if target == "portal" else run_orthanc
                        row = runner(ctx, data, channel)
                        finish_row(row, data)
                    except Exception as error:  # report it, run the others
                        message = f"{type(error).__name__}: {error}"
                        say(f"FAILED {name} {channel} {target}: {message}")
                        sides[target] = {"error": message}
                        results["failures"].append(f"{name} {channel} {target}: {message}")
                        continue
                    sides[target] = row
                    say(
                        f"  {row['seconds']:.2f} s, {row['instances_per_second']:.1f} inst/s, "
                        f"{row['cpu_ms_per_instance']:.1f} CPU ms/inst"
                    )
            shutil.rmtree(ctx.work / "data", ignore_errors=True)


def write_output(args: argparse.Namespace, results: dict[str, Any]) -> None:
    if args.json and args.json != "-":
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if args.json == "-":
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        print(render_markdown(results))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        print(render_markdown(json.loads(Path(args.report).read_text())))
        return 0
    if args.work:
        work = Path(args.work).resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="pacs-bench-ingest-"))
    (work / "storage").mkdir(exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    setup_django(work / "storage")

    import io

    from django.core.management import call_command

    # A fresh embedded database has no tables yet; later runs only check.
    call_command("migrate_portal", verbosity=0, stdout=io.StringIO())
    run_id = secrets.token_hex(3)
    tenants = Tenants(run_id, args.keep)
    ctx = Context(args=args, work=work, logs=logs, tenants=tenants)
    results: dict[str, Any] = {
        "run_id": run_id,
        "args": {k: v for k, v in vars(args).items() if k != "report"},
        "machine": machine(work),
        "orthanc_settings": orthanc_best_settings(args.clients),
        "sets": {},
        "failures": [],
    }
    say(f"run {run_id}, work directory {work}")
    interrupted = False
    try:
        run(args, ctx, results)
    except BaseException as error:
        interrupted = True
        results["failures"].append(f"aborted: {type(error).__name__}: {error}")
        raise
    finally:
        left = tenants.purge_all()
        if left:
            results["failures"].append(f"tenants not purged: {', '.join(left)}")
        if args.keep or results["failures"]:
            results["kept"] = {
                "work": str(work),
                "logs": str(logs),
                "tenants": [t.slug for t in tenants.created] if args.keep else left,
            }
            say(f"kept {logs if not args.keep else work}")
            if not args.keep:  # only the logs are worth keeping after a failure
                for child in work.iterdir():
                    if child != logs:
                        shutil.rmtree(child, ignore_errors=True)
        elif not args.work:
            shutil.rmtree(work, ignore_errors=True)
        else:
            for child in ("storage", "logs", "orthanc", "data"):
                shutil.rmtree(work / child, ignore_errors=True)
        if not interrupted:
            write_output(args, results)
    return 1 if results["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
