"""`manage.py dicom_gateway`: C-ECHO, C-STORE and Query/Retrieve for every tenant on one port."""

import logging
import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from pynetdicom import _config as pynetdicom_config

from dicomnet.gateway import DEFAULT_AE_TITLE, DicomGateway


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
            "--host",
            default="0.0.0.0",  # noqa: S104 - modalities call in from the hospital network
            help="Address to listen on (default: %(default)s).",
        )
        parser.add_argument(
            "--ae-title",
            default=DEFAULT_AE_TITLE,
            help="The gateway's own AE title, as shown in logs (default: %(default)s).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["verbosity"] < 2:
            # pynetdicom logs several lines per association; ours log one. Its standard
            # handlers also format every DIMSE message before the level check drops it
            # (profiled: a few percent of a C-STORE), so they are not bound at all.
            logging.getLogger("pynetdicom").setLevel(logging.WARNING)
            pynetdicom_config.LOG_HANDLER_LEVEL = "none"
        gateway = DicomGateway(ae_title=options["ae_title"])
        server = gateway.start(options["host"], options["port"])
        stopping = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stopping.set())
        self.stdout.write(
            f"DICOM gateway {options['ae_title']} listening on "
            f"{options['host']}:{options['port']}; Ctrl-C stops it"
        )
        stopping.wait()
        self.stdout.write("stopping: open associations get 30 s to finish")
        gateway.stop(server)
