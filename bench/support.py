"""What the benchmarks share: free ports, waiting for a server, process trees, the machine."""

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


@contextmanager
def service(
    command: list[str], log: Path, port: int | None = None, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A subprocess in its own process group, stopped (and its group) on exit; with `port`,
    only once something listens there."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            if port is not None:
                wait_for_port(port, process)
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def orthanc_config(home: Path, *, http_port: int, dicom_port: int, **extra: Any) -> Path:
    """An Orthanc configuration on loopback ports, storage and index below `home`, written to
    `home/orthanc.json`; `extra` adds or overrides settings (plugins, DICOMweb)."""
    config = {
        "Name": "bench",
        "StorageDirectory": str(home / "storage"),
        "IndexDirectory": str(home / "index"),
        "DicomAet": "ORTHANC",
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [],
        **extra,
    }
    path = home / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def descendants(pid: int) -> list[int]:
    """The process and all its children, grandchildren and so on (from /proc)."""
    found = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                found.extend(descendants(int(child)))
    except OSError:
        pass
    return found


def cpu_and_memory() -> tuple[str, float]:
    """The CPU model and the RAM in GiB, as /proc tells them."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "",
    )
    mem = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return cpu, round(mem / 1024 / 1024, 1)


# -- server processes: CPU time and peak memory, from /proc --------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int, *, children: bool = True) -> float:
    """utime + stime of the process (all its threads, live and ended) and, with `children`,
    cutime + cstime (its children that have ended and been waited for); 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name in parentheses may hold spaces; the fields after it are fixed.
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / CLOCK_TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process tree: every live member's own time plus its ended children's.
    A live child is not yet in its parent's cutime, so nothing is counted twice."""
    return sum(process_cpu_seconds(each) for each in descendants(pid))


def command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def peak_rss_mib(pids: list[int]) -> dict[int, float]:
    """VmHWM (peak resident set size since start or the last reset) of each live process."""
    peaks: dict[int, float] = {}
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks[pid] = round(int(line.split()[1]) / 1024, 1)
    return peaks


def reset_peak_rss(pids: list[int]) -> int:
    """Reset VmHWM to the current RSS (`echo 5 > /proc/PID/clear_refs`, Linux 4.0+); returns
    how many processes could not be reset (not ours, or gone)."""
    failed = 0
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            failed += 1
    return failed


def parent_pid(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    return None


# -- tools and their versions ---------------------------------------------------------------

ORTHANC_DICOMWEB_FALLBACK = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def first_line(command: list[str]) -> str:
    """The first line a command prints, spaces collapsed; "" if it fails or cannot run."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = done.stdout.strip().splitlines() if done.returncode == 0 else []
    return " ".join(lines[0].split()) if lines else ""


def orthanc_dicomweb_plugin() -> str:
    """The DICOMweb plugin of Debian's orthanc-dicomweb package (`dpkg -L`), else its usual
    path."""
    try:
        listing = subprocess.run(
            ["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, check=False
        ).stdout.split()
    except OSError:
        listing = []
    plugins = [p for p in listing if p.endswith(".so") and "/plugins/" in p]
    found = plugins or [p for p in listing if ".so" in p.rsplit("/", 1)[-1]]
    return found[0] if found else ORTHANC_DICOMWEB_FALLBACK


def setup_django(storage_root: Path) -> None:
    """Django for a bench process: the portal's settings, bench tenants below `storage_root`."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.setdefault("DEBUG", "true")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ["PORTAL_BASE_DOMAIN"] = "localhost"
    os.environ["PORTAL_STORAGE_ROOT"] = str(storage_root)
    storage_root.mkdir(parents=True, exist_ok=True)
    import django

    django.setup()
