"""`make run`: migrate, seed the demo, then run web, worker, singleton and the DICOM gateway."""

import os
import signal
import subprocess
import sys
import time

PORT = int(os.environ.get("PORTAL_WEB_PORT", "8000"))


def manage(*args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], check=True)


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.setdefault("DEBUG", "true")
    os.environ.setdefault("PORTAL_URL_PORT", str(PORT))
    # The demo's workstations (storescp, a local viewer) listen on this machine.
    os.environ.setdefault("PORTAL_DICOM_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128")
    manage("migrate_portal")
    # From here on as in a deployment: only migrations (and imports) log in as the owner; the
    # processes use the application role, which cannot alter or drop what it writes.
    os.environ.pop("DATABASE_OWNER_URL", None)
    manage("demo_seed")
    celery = [sys.executable, "-m", "celery", "-A", "portal"]
    processes = {
        "web": [sys.executable, "manage.py", "runserver", f"0.0.0.0:{PORT}"],
        "worker": [*celery, "worker", "-l", "info", "-Q", "default,periodic", "-c", "2"],
        "singleton": [*celery, "beat", "-l", "info"],
        "dicom": [sys.executable, "manage.py", "dicom_gateway"],
    }
    children = {name: subprocess.Popen(cmd) for name, cmd in processes.items()}
    print(f"running {', '.join(children)}; Ctrl-C stops them all", flush=True)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    exit_code = 0
    while not stopping:
        for name, child in children.items():
            if child.poll() is not None:
                print(f"{name} exited with {child.returncode}; stopping the rest", flush=True)
                exit_code, stopping = child.returncode or 1, True
                break
        time.sleep(0.5)
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children.values():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
