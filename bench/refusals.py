"""Time to answer a hostile C-STORE, association included: the portal's gateway against
Orthanc, same run, same files (the generated corpus of tests/studies/hostile.py).

Each sample is one whole exchange as a modality lives it: A-ASSOCIATE, one C-STORE of the
file's bytes as they are (pynetdicom sends them unparsed), the answer, A-RELEASE. The
portal must answer every refusal with its reason within 100 ms at the 99th percentile
(issue 11); the valid kinds of the corpus are timed too, as the baseline of a store.

Run it under portal.embedded, from the repository root:

    .venv/bin/python -m portal.embedded --var .var/bench -- .venv/bin/python bench/refusals.py

`make bench-refusals` does the same; `--help` lists the options.
"""

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from support import cpu_and_memory, first_line, free_port, orthanc_config, service, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
# `python bench/refusals.py` puts bench/ first on sys.path, where bench/tenants.py would
# shadow the `tenants` app; the repository root goes there instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

ORTHANC = "/usr/sbin/Orthanc"
TARGET_P99_MS = 100.0
TIMEOUT = 10  # seconds the client waits for any answer; longer is counted as a hang


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time to answer each kind of hostile C-STORE (association included), "
        "the portal's gateway against Orthanc at its defaults for DICOM.",
    )
    parser.add_argument(
        "--rounds", type=int, default=20, help="Times each kind is sent (default 20)."
    )
    parser.add_argument("--no-orthanc", action="store_true", help="Time the portal only.")
    parser.add_argument("--json", type=Path, help="Write the samples' summary to this file.")
    parser.add_argument(
        "--report", type=Path, help="Print the Markdown of an earlier --json file and exit."
    )
    return parser.parse_args(argv)


def setup_django(storage_root: Path) -> None:
    import secrets

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ["DEBUG"] = "false"
    if len(os.environ.get("SECRET_KEY", "")) < 32:
        os.environ["SECRET_KEY"] = secrets.token_urlsafe(48)
    os.environ["ALLOWED_HOSTS"] = "localhost,.localhost"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("CONN_MAX_AGE", "60")
    os.environ["PORTAL_STORAGE_ROOT"] = str(storage_root)
    import django

    django.setup()


def client_without_nagle() -> None:
    """The client's sockets with TCP_NODELAY, as DCMTK's with `TCP_NODELAY=1` and as
    modalities tuned for latency: with Nagle's algorithm on, the client holds each C-STORE's
    last data PDU until the server's delayed ACK (measured: 40 ms more per store, whichever
    server), which would time the client's socket, not the server."""
    import socket

    from pynetdicom.transport import AssociationSocket

    create = AssociationSocket._create_socket

    def without_nagle(self: AssociationSocket, address: Any) -> socket.socket:
        made = create(self, address)
        made.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return made

    AssociationSocket._create_socket = without_nagle  # type: ignore[method-assign]


def exchange(port: int, called: str, path: Path, context: tuple[str, str]) -> tuple[float, str]:
    """One association with one C-STORE of `path`'s bytes; (milliseconds, what came back)."""
    from pynetdicom import AE

    client = AE(ae_title="BENCHREF")
    client.acse_timeout = client.dimse_timeout = client.network_timeout = TIMEOUT
    client.add_requested_context(*context)
    started = time.perf_counter()
    assoc = client.associate("127.0.0.1", port, ae_title=called)
    try:
        if not assoc.is_established:
            return 1000 * (time.perf_counter() - started), "association refused"
        try:
            answer = assoc.send_c_store(path)
        except ValueError:  # no presentation context accepted for it
            return 1000 * (time.perf_counter() - started), "context refused"
        status = f"0x{int(answer.Status):04X}" if "Status" in answer else "no answer"
    finally:
        if assoc.is_established:
            assoc.release()
    return 1000 * (time.perf_counter() - started), status


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "p50": round(statistics.median(samples), 2),
        "p95": round(percentile(samples, 0.95), 2),
        "p99": round(percentile(samples, 0.99), 2),
        "max": round(max(samples), 2),
    }


@contextmanager
def portal_gateway(logs: Path) -> Iterator[tuple[int, str]]:
    from django.db import connection

    from tenants.services import tenant_create, tenant_delete, tenant_purge

    stamp = int(time.time())
    slug = f"bench-refusals-{stamp}"
    connection.set_schema_to_public()
    tenant = tenant_create(
        slug=slug,
        name="Bench refusals",
        admin_email=f"admin@{slug}.example.org",
        created_by="bench",
        ae_title=f"BREF{stamp % 10**8}",
    ).tenant
    port = free_port()
    command = [sys.executable, "manage.py", "dicom_gateway", "--host", "127.0.0.1"]
    command += ["--port", str(port)]
    try:
        with service(command, logs / "gateway.log", port):
            yield port, tenant.ae_title
    finally:
        connection.set_schema_to_public()
        tenant.refresh_from_db()
        tenant_purge(
            tenant=tenant_delete(tenant=tenant, actor="bench", confirm_slug=slug), actor="bench"
        )


@contextmanager
def orthanc(work: Path, logs: Path) -> Iterator[tuple[int, str]]:
    http_port, dicom_port = free_port(), free_port()
    home = work / "orthanc"
    home.mkdir()
    # Orthanc's DICOM defaults: any calling AE, every storage class it knows. Its DICOM
    # server is DCMTK's, which reads TCP_NODELAY from the environment.
    config = orthanc_config(home, http_port=http_port, dicom_port=dicom_port, DicomThreadsCount=4)
    with service(
        [ORTHANC, str(config)], logs / "orthanc.log", http_port, env={"TCP_NODELAY": "1"}
    ) as process:
        wait_for_port(dicom_port, process)
        yield dicom_port, "ORTHANC"


def run(args: argparse.Namespace) -> dict[str, Any]:
    import pydicom
    from pynetdicom import _config as pynetdicom_config

    from tests.studies.hostile import STORED, corpus

    work = Path(tempfile.mkdtemp(prefix="bench-refusals-"))
    logs = work / "logs"
    logs.mkdir()
    setup_django(work / "storage")
    from django.core.management import call_command

    call_command("migrate_portal", verbosity=0, stdout=io.StringIO())
    warnings.simplefilter("ignore")  # pydicom warns on the corpus's values
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True  # the bytes as they are
    client_without_nagle()
    specimens = [s for s in corpus(work / "corpus") if s.dimse]
    contexts = {}
    for specimen in specimens:
        meta = pydicom.filereader.read_file_meta_info(specimen.path)
        contexts[specimen.kind] = (str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
    targets = {"portal": portal_gateway}
    if not args.no_orthanc and Path(ORTHANC).exists():
        targets["orthanc"] = lambda logs: orthanc(work, logs)
    cpu, memory = cpu_and_memory()
    results: dict[str, Any] = {
        "machine": f"{cpu}, {os.cpu_count()} cores, {memory} GiB",
        "orthanc": first_line([ORTHANC, "--version"]) if "orthanc" in targets else None,
        "rounds": args.rounds,
        "kinds": len(specimens),
        "refused_kinds": sum(1 for s in specimens if s.expected != STORED),
        "targets": {},
    }
    for name, start in targets.items():
        with ExitStack() as stack:
            port, called = stack.enter_context(start(logs))
            exchange(port, called, specimens[0].path, contexts[specimens[0].kind])  # warm up
            refused, valid, answers, hangs = [], [], {}, set()
            by_kind: dict[str, list[float]] = {}
            for _round in range(args.rounds):
                for specimen in specimens:
                    if specimen.kind in hangs:
                        continue  # once is enough to know; not timed again
                    ms, answer = exchange(port, called, specimen.path, contexts[specimen.kind])
                    answers.setdefault(specimen.kind, answer)
                    if ms >= 1000 * TIMEOUT:
                        hangs.add(specimen.kind)
                        continue
                    (valid if specimen.expected == STORED else refused).append(ms)
                    by_kind.setdefault(specimen.kind, []).append(ms)
            results["targets"][name] = {
                "refused": summary(refused),
                "valid": summary(valid),
                "answers": dict(sorted(answers.items())),  # what each kind got back
                "hangs": sorted(hangs),
                # The slowest kinds first: where a tail comes from.
                "slowest": {
                    kind: summary(times)
                    for kind, times in sorted(
                        by_kind.items(), key=lambda item: -percentile(item[1], 0.95)
                    )[:8]
                },
            }
        print(f"{name}: refused {results['targets'][name]['refused']}", file=sys.stderr)
    return results


def render_markdown(results: dict[str, Any]) -> str:
    lines = [
        f"Machine: {results['machine']}. {results['kinds']} kinds of the hostile corpus that "
        f"travel as a C-STORE ({results['refused_kinds']} to refuse), each sent "
        f"{results['rounds']} times; one sample = associate, C-STORE, answer, release.",
        "",
        "| target | objects | answered | p50 ms | p95 ms | p99 ms | max ms | kinds unanswered "
        f"in {TIMEOUT} s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, figures in results["targets"].items():
        for group in ("refused", "valid"):
            row = figures[group]
            hung = figures.get("hangs", []) if group == "refused" else []
            lines.append(
                f"| {name} | {group} | {row['n']} | {row['p50']} | {row['p95']} | "
                f"{row['p99']} | {row['max']} | {len(hung)} |"
            )
    portal = results["targets"]["portal"]["refused"]["p99"]
    verdict = "meets" if portal <= TARGET_P99_MS else "misses"
    lines += [
        "",
        f"The portal's p99 for a refusal, {portal} ms, {verdict} the "
        f"{TARGET_P99_MS:.0f} ms target.",
    ]
    if "orthanc" in results["targets"]:
        other = results["targets"]["orthanc"]["refused"]["p99"]
        hung = results["targets"]["orthanc"].get("hangs", [])
        lines.append(
            f"Orthanc ({results['orthanc']}) answers the same files at p99 {other} ms "
            f"(ratio portal/Orthanc {portal / other:.2f}); it stores many of them, and "
            f"{len(hung)} kinds got no answer within {TIMEOUT} s: {', '.join(hung) or 'none'}."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        print(render_markdown(json.loads(args.report.read_text())))
        return 0
    results = run(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(render_markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
