"""`manage.py dicom_gateway`: C-ECHO, C-STORE and Query/Retrieve for every tenant on one port."""

import contextlib
import gc
import logging
import os
import signal
import threading
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections
from pynetdicom import _config as pynetdicom_config

from dicomnet import tls
from dicomnet.gateway import DEFAULT_AE_TITLE, MAX_ASSOCIATIONS, DicomGateway
from portal.dbpool import pool_connections

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Run the DICOM gateway (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET). One port serves "
        "every tenant: the called AE title picks the tenant; unknown titles, suspended "
        "tenants and, where a tenant requires it, unknown calling nodes are rejected at "
        "association time. C-MOVE sends only to the tenant's listed remote nodes."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--port",
            type=int,
            default=settings.PORTAL_DICOM_PORT,
            help="TCP port to listen on (default: PORTAL_DICOM_PORT, %(default)s).",
        )
        parser.add_argument(
            "--tls-port",
            type=int,
            default=settings.PORTAL_DICOM_TLS_PORT,
            help="Also serve DICOM TLS on this port, with PORTAL_DICOM_TLS_CERTIFICATE and "
            "PORTAL_DICOM_TLS_KEY (default: PORTAL_DICOM_TLS_PORT, %(default)s; 0: no TLS).",
        )
        parser.add_argument(
            "--host",
            default="0.0.0.0",  # noqa: S104 - modalities call in from the hospital network
            help="Address to listen on (default: %(default)s).",
        )
        parser.add_argument(
            "--ae-title",
            default=DEFAULT_AE_TITLE,
            help="The gateway's own AE title, as shown in logs (default: %(default)s).",
        )
        parser.add_argument(
            "--processes",
            type=int,
            default=settings.PORTAL_DICOM_PROCESSES,
            help="Gateway processes sharing the port, one per core to use both (default: "
            "PORTAL_DICOM_PROCESSES, %(default)s). The kernel spreads associations among "
            "them; limits per tenant and per peer count in each process.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["verbosity"] < 2:
            # pynetdicom logs several lines per association; ours log one. Its standard
            # handlers also format every DIMSE message before the level check drops it
            # (profiled: a few percent of a C-STORE), so they are not bound at all.
            logging.getLogger("pynetdicom").setLevel(logging.WARNING)
            pynetdicom_config.LOG_HANDLER_LEVEL = "none"
        processes = options["processes"]
        if processes < 1:
            raise CommandError("--processes must be at least 1.")
        if not 0 <= options["tls_port"] <= 65535 or options["tls_port"] == options["port"]:
            raise CommandError("--tls-port must be 0 (off) or a port other than --port.")
        try:
            options["ssl_context"] = tls.server_context(port=options["tls_port"])
        except ImproperlyConfigured as error:
            raise CommandError(str(error)) from error
        tls_note = f", DICOM TLS on port {options['tls_port']}" if options["ssl_context"] else ""
        self.stdout.write(
            f"DICOM gateway {options['ae_title']} listening on "
            f"{options['host']}:{options['port']}{tls_note} in {processes} process(es); "
            "Ctrl-C stops it"
        )
        self.stdout.flush()
        if processes == 1:
            self._serve(options, shared=False)
            return
        connections.close_all()  # no connection crosses the fork
        children = []
        for _ in range(processes):
            pid = os.fork()
            if pid == 0:  # the child serves until its parent passes on a signal
                code = 0
                try:
                    self._serve(options, shared=True)
                except BaseException:
                    logger.exception("gateway process %d failed", os.getpid())
                    code = 1
                finally:
                    os._exit(code)
            children.append(pid)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda number, _frame: _signal_all(children, number))
        for pid in children:
            while True:
                try:
                    os.waitpid(pid, 0)
                    break
                except InterruptedError:
                    continue
                except ChildProcessError:
                    break

    def _serve(self, options: dict[str, Any], *, shared: bool) -> None:
        # One connection per open association, and a few for what runs beside them.
        pool_connections(max_size=MAX_ASSOCIATIONS + 4)
        gateway = DicomGateway(ae_title=options["ae_title"])
        # Django, pydicom and pynetdicom make a few hundred thousand long-lived objects, and
        # every full collection walked them all: 90 to 100 ms, once every 60 associations or
        # so (profiled), stalling each open association's answer. Frozen, they are never
        # walked; collections see only what associations leave behind.
        gc.collect()
        gc.freeze()
        servers = [gateway.start(options["host"], options["port"], shared=shared)]
        if options["ssl_context"] is not None:
            servers.append(
                gateway.start(
                    options["host"],
                    options["tls_port"],
                    shared=shared,
                    ssl_context=options["ssl_context"],
                )
            )
        gateway.publish_presence(label=str(options["port"]))
        stopping = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stopping.set())
        stopping.wait()
        self.stdout.write(f"stopping ({os.getpid()}): open associations get 30 s to finish")
        gateway.stop(*servers)


def _signal_all(children: list[int], signum: int) -> None:
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
