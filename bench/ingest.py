"""Benchmark ingest end to end (accepted to indexed and stored) via the pipeline, REST and DIMSE."""

import argparse
import http.client
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support import (
    cpu_and_memory,
    descendants,
    free_port,
    orthanc_config,
    service,
    wait_for_port,
)

ROOT = Path(__file__).resolve().parent.parent
# `python bench/ingest.py` puts bench/ first on sys.path, where bench/tenants.py would shadow
# the `tenants` app; the repository root goes there instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

CHANNELS = ("direct", "rest", "dimse", "orthanc")
ORTHANC = "/usr/sbin/Orthanc"
SERIES_PER_STUDY = 4
BOUNDARY = "bench-ingest-boundary-7f3a"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/ingest.py",
        description="Generate synthetic CT instances, then time their ingest end to end "
        "(accepted to indexed and stored) into a fresh bench tenant per channel and set: "
        "`direct` (staging + ingest_job_submit(run_now=True) in-process), `rest` (POST "
        "/api/v1/ingest/ to gunicorn + a Celery worker), `dimse` (DCMTK storescu to "
        "`manage.py dicom_gateway`), and optionally `orthanc` (storescu into Orthanc, for "
        "comparison). Needs DATABASE_URL and REDIS_URL (run it under portal.embedded).",
    )
    parser.add_argument(
        "--count", type=int, default=2000, help="Large CT instances (default: 2000)."
    )
    parser.add_argument(
        "--size", type=int, default=512, help="Rows and columns of the large set (default: 512)."
    )
    parser.add_argument(
        "--small-count",
        type=int,
        default=20000,
        help="Small CT instances (default: 20000; 0 skips the small set).",
    )
    parser.add_argument(
        "--small-size",
        type=int,
        default=64,
        help="Rows and columns of the small set (default: 64).",
    )
    parser.add_argument(
        "--channels",
        default="direct,rest,dimse",
        help=f"Comma-separated, from {', '.join(CHANNELS)} (default: direct,rest,dimse).",
    )
    parser.add_argument(
        "--batch", type=int, default=20, help="Files per REST multipart request (default: 20)."
    )
    parser.add_argument(
        "--rest-senders",
        type=int,
        default=2,
        help="Concurrent REST clients, one per gunicorn worker (default: 2).",
    )
    parser.add_argument(
        "--keep", action="store_true", help="Keep the bench tenants and their files."
    )
    parser.add_argument("--json", action="store_true", help="Print the results as JSON.")
    args = parser.parse_args(argv)
    args.channels = [c.strip() for c in args.channels.split(",") if c.strip()]
    unknown = set(args.channels) - set(CHANNELS)
    if unknown:
        parser.error(f"unknown channels: {', '.join(sorted(unknown))}")
    if args.count < 1 or args.small_count < 0 or args.batch < 1 or args.rest_senders < 1:
        parser.error("--count, --batch and --rest-senders must be at least 1")
    return args


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


# -- environment and processes ----------------------------------------------------------------


def setup_django(storage_root: Path) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.setdefault("DEBUG", "true")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ["PORTAL_BASE_DOMAIN"] = "localhost"
    os.environ["PORTAL_STORAGE_ROOT"] = str(storage_root)
    import django

    django.setup()


def peak_rss_mib(pid: int) -> dict[str, float]:
    """VmHWM of the process and each of its descendants, by `pid command`."""
    peaks: dict[str, float] = {}
    for each in descendants(pid):
        try:
            status = Path(f"/proc/{each}/status").read_text()
            cmd = Path(f"/proc/{each}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks[f"{each} {cmd.strip()[:60]}"] = round(int(line.split()[1]) / 1024, 1)
    return peaks


def wait_for_log(log: Path, needle: str, process: subprocess.Popen[bytes], timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited: {log.read_text()[-2000:]}")
        if needle in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{needle!r} not in {log} after {timeout} s")


# -- tenants ----------------------------------------------------------------------------------


class Tenants:
    """The bench tenants of this run, purged at the end unless kept."""

    def __init__(self, run_id: str) -> None:
        self.run_id, self.created = run_id, []

    def new(self, label: str) -> Any:
        from tenants.services import tenant_create

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

    def purge(self) -> None:
        from django.db import connection

        from tenants.services import tenant_delete, tenant_purge

        connection.set_schema_to_public()
        for tenant in self.created:
            tenant_delete(tenant=tenant, actor="bench", confirm_slug=tenant.slug)
            tenant_purge(tenant=tenant, actor="bench")


def indexed(tenant: Any) -> tuple[int, int]:
    """Instances indexed and bytes stored in the tenant."""
    from django.db.models import Count, Sum
    from django_tenants.utils import tenant_context

    from studies.models import Instance

    with tenant_context(tenant):
        row = Instance.objects.aggregate(n=Count("pk"), size=Sum("size_bytes"))
        return int(row["n"]), int(row["size"] or 0)


def wait_indexed(tenant: Any, count: int, timeout: float, poll: float = 0.1) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if indexed(tenant)[0] >= count:
            return time.perf_counter()
        time.sleep(poll)
    raise RuntimeError(f"only {indexed(tenant)[0]} of {count} indexed after {timeout} s")


# -- channels ---------------------------------------------------------------------------------


def run_direct(tenant: Any, files: list[Path], **_: Any) -> dict[str, Any]:
    from django_tenants.utils import tenant_context

    from studies.ingest import ingest_item_stage, ingest_job_create, ingest_job_submit

    with tenant_context(tenant):
        started = time.perf_counter()
        job = ingest_job_create(source="folder", description="bench direct")
        for path in files:
            with path.open("rb") as stream:
                ingest_item_stage(job=job, name=path.name, stream=stream)
        job = ingest_job_submit(job=job, run_now=True)
        ended = time.perf_counter()
    return {"seconds": ended - started, "job_status": job.status, "peak_rss_mib": {}}


def multipart(files: list[Path]) -> bytes:
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


def post_batches(port: int, host: str, token: str, batches: list[list[Path]]) -> list[int]:
    job_ids = []
    for batch in batches:
        body = multipart(batch)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        connection.request(
            "POST",
            "/api/v1/ingest/",
            body=body,
            headers={
                "Host": host,
                "Authorization": f"Bearer {token}",
                "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            },
        )
        response = connection.getresponse()
        payload = response.read()
        connection.close()
        if response.status != 202:
            raise RuntimeError(f"POST answered {response.status}: {payload[:500]!r}")
        job_ids.append(json.loads(payload)["id"])
    return job_ids


def run_rest(
    tenant: Any, files: list[Path], *, logs: Path, batch: int, rest_senders: int, **_: Any
) -> dict[str, Any]:
    from django_tenants.utils import tenant_context

    from accounts.models import TokenScope, User
    from accounts.services import api_token_create
    from studies.models import IngestJob, IngestJobStatus

    with tenant_context(tenant):
        admin = User.objects.get(username="admin")
        _, token = api_token_create(user=admin, name="bench ingest", scope=TokenScope.STORE)
    port = free_port()
    python = sys.executable
    gunicorn = [python, "-m", "gunicorn", "portal.wsgi", "-w", "2", "-b", f"127.0.0.1:{port}"]
    worker = [python, "-m", "celery", "-A", "portal", "worker", "-Q", "default", "-c", "2"]
    worker += ["-l", "INFO", "-n", f"bench-{uuid.uuid4().hex[:6]}@%h"]
    with (
        service(gunicorn, logs / "gunicorn.log", port) as web,
        service(worker, logs / "celery.log") as celery,
    ):
        wait_for_log(logs / "celery.log", "ready.", celery)
        batches = [files[i : i + batch] for i in range(0, len(files), batch)]
        shares = [batches[i::rest_senders] for i in range(rest_senders)]
        job_ids: list[int] = []
        errors: list[BaseException] = []

        def send(share: list[list[Path]]) -> None:
            try:
                job_ids.extend(post_batches(port, f"{tenant.slug}.localhost", token, share))
            except BaseException as error:  # reported after the join
                errors.append(error)

        started = time.perf_counter()
        threads = [threading.Thread(target=send, args=(share,)) for share in shares]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        accepted = time.perf_counter()
        if errors:
            raise errors[0]
        open_states = [IngestJobStatus.RECEIVING, IngestJobStatus.QUEUED, IngestJobStatus.RUNNING]
        deadline = time.monotonic() + 1800
        while True:
            with tenant_context(tenant):
                if not IngestJob.objects.filter(pk__in=job_ids, status__in=open_states).exists():
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("REST jobs still open after 30 minutes")
            time.sleep(0.1)
        ended = time.perf_counter()
        peaks = {"gunicorn": peak_rss_mib(web.pid), "celery": peak_rss_mib(celery.pid)}
    with tenant_context(tenant):
        statuses = sorted(
            set(IngestJob.objects.filter(pk__in=job_ids).values_list("status", flat=True))
        )
    return {
        "seconds": ended - started,
        "upload_seconds": accepted - started,
        "jobs": len(job_ids),
        "job_status": ",".join(statuses),
        "peak_rss_mib": peaks,
    }


def storescu(ae_title: str, port: int, folder: Path, log: Path) -> None:
    """DCMTK's storescu with its defaults, as a modality sends; +sd only names the folder."""
    with log.open("ab") as out:
        subprocess.run(
            ["storescu", "-aec", ae_title, "+sd", "127.0.0.1", str(port), str(folder)],
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def run_dimse(tenant: Any, files: list[Path], *, logs: Path, **_: Any) -> dict[str, Any]:
    port = free_port()
    gateway = [sys.executable, "manage.py", "dicom_gateway", "--host", "127.0.0.1"]
    gateway += ["--port", str(port)]
    with service(gateway, logs / "gateway.log", port) as process:
        started = time.perf_counter()
        storescu(tenant.ae_title, port, files[0].parent, logs / "storescu.log")
        sent = time.perf_counter()
        ended = wait_indexed(tenant, len(files), timeout=600)
        peaks = {"gateway": peak_rss_mib(process.pid)}
    return {
        "seconds": ended - started,
        "storescu_seconds": sent - started,
        "peak_rss_mib": peaks,
    }


def orthanc_count(port: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/statistics")
    count = int(json.loads(connection.getresponse().read())["CountInstances"])
    connection.close()
    return count


def run_orthanc(tenant: Any, files: list[Path], *, logs: Path, work: Path, **_: Any):
    dicom_port, http_port = free_port(), free_port()
    home = work / f"orthanc-{uuid.uuid4().hex[:6]}"
    home.mkdir()
    orthanc_config(home, http_port=http_port, dicom_port=dicom_port)
    try:
        with service([ORTHANC, str(home / "orthanc.json")], logs / "orthanc.log", dicom_port) as o:
            wait_for_port(http_port, o)
            started = time.perf_counter()
            storescu("ORTHANC", dicom_port, files[0].parent, logs / "storescu-orthanc.log")
            ended = time.perf_counter()
            stored = orthanc_count(http_port)
            peaks = {"orthanc": peak_rss_mib(o.pid)}
            size = sum(f.stat().st_size for f in (home / "storage").rglob("*") if f.is_file())
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return {
        "seconds": ended - started,
        "indexed": stored,
        "stored_bytes": size,
        "peak_rss_mib": peaks,
    }


RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "direct": run_direct,
    "rest": run_rest,
    "dimse": run_dimse,
    "orthanc": run_orthanc,
}


# -- report -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    from django.db import connection

    cpu, ram_gib = cpu_and_memory()
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg = cursor.fetchone()[0]
    storescu_version = subprocess.run(
        ["storescu", "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": ram_gib,
        "postgresql": pg,
        "python": platform.python_version(),
        "dcmtk": storescu_version[0] if storescu_version else "",
        "loadavg_at_start": os.getloadavg(),
    }


def print_report(results: dict[str, Any]) -> None:
    m = results["machine"]
    print(
        f"machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_gib']} GiB RAM, PostgreSQL "
        f"{m['postgresql']}, Python {m['python']}, {m['dcmtk']}, load at start "
        + " ".join(f"{x:.2f}" for x in m["loadavg_at_start"])
    )
    for name, data in results["sets"].items():
        print(
            f"\nset {name}: {data['count']} CT instances of {data['size']}x{data['size']}, "
            f"{data['bytes'] / 1e6:.1f} MB (generated in {data['generate_seconds']:.1f} s)"
        )
        print(f"  {'channel':<8} {'seconds':>8} {'inst/s':>8} {'MB/s':>7}  indexed  notes")
        for channel, row in data["channels"].items():
            notes = [
                f"{key} {row[key]:.1f} s" if isinstance(row[key], float) else f"{key} {row[key]}"
                for key in ("upload_seconds", "storescu_seconds", "jobs", "job_status")
                if key in row
            ]
            print(
                f"  {channel:<8} {row['seconds']:8.2f} {row['instances_per_second']:8.1f} "
                f"{row['mb_per_second']:7.1f}  {row['indexed']:>7}  {', '.join(notes)}"
            )
            for process, peaks in row["peak_rss_mib"].items():
                values = ", ".join(f"{v:.0f}" for v in peaks.values())
                print(f"           peak RSS MiB, {process}: {values}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="pacs-bench-ingest-"))
    storage_root = work / "storage"
    storage_root.mkdir()
    setup_django(storage_root)

    import io

    from django.core.management import call_command
    from django.db import connection

    # A fresh embedded database has no tables yet; later runs only check.
    call_command("migrate_portal", verbosity=0, stdout=io.StringIO())
    run_id = secrets.token_hex(3)
    tenants = Tenants(run_id)
    logs = work / "logs"
    logs.mkdir()
    results: dict[str, Any] = {"run_id": run_id, "machine": machine(), "sets": {}}
    sets = [("large", args.count, args.size)]
    if args.small_count:
        sets.append(("small", args.small_count, args.small_size))
    try:
        for name, count, size in sets:
            started = time.perf_counter()
            folder = work / "data" / name
            total = generate(folder, count, size, f"{name}{run_id}")
            files = sorted(folder.iterdir())
            data: dict[str, Any] = {
                "count": count,
                "size": size,
                "bytes": total,
                "generate_seconds": time.perf_counter() - started,
                "channels": {},
            }
            results["sets"][name] = data
            for channel in args.channels:
                connection.set_schema_to_public()
                tenant = tenants.new(f"{name} {channel}")
                row = RUNNERS[channel](
                    tenant,
                    files,
                    logs=logs,
                    work=work,
                    batch=args.batch,
                    rest_senders=args.rest_senders,
                )
                if channel != "orthanc":
                    row["indexed"], row["stored_bytes"] = indexed(tenant)
                row["instances_per_second"] = row["indexed"] / row["seconds"]
                row["mb_per_second"] = total / 1e6 / row["seconds"]
                data["channels"][channel] = row
                if not args.json:
                    print(f"{name} {channel}: {row['seconds']:.1f} s", file=sys.stderr)
            shutil.rmtree(folder)
    except BaseException:
        # The services' logs explain most failures; keep them.
        print(f"failed; logs kept in {logs}", file=sys.stderr)
        args.keep = True
        raise
    finally:
        if not args.keep:
            tenants.purge()
            shutil.rmtree(work, ignore_errors=True)
        else:
            results["kept"] = {"work": str(work), "tenants": [t.slug for t in tenants.created]}
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        print_report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
