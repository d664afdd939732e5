"""What a modality engineer needs to connect to a tenant: address, title, services, syntaxes.

Shown on the dashboard and the settings page, with command lines to copy (DCMTK's `echoscu`,
`storescu`, `findscu`), read from the gateway's own tables so that the page cannot drift from
what the gateway accepts.
"""

import shlex
from dataclasses import dataclass

from django.conf import settings
from pydicom.uid import UID
from pynetdicom import AllStoragePresentationContexts

from configuration.models import SINGLETON_ID, TenantSettings
from dicomnet import queryretrieve
from dicomnet.gateway import TRANSFER_SYNTAXES
from tenants.models import Tenant

CALLING_EXAMPLE = "MYMODALITY"


@dataclass(frozen=True)
class ConnectionFacts:
    ae_title: str
    host: str
    port: int
    tls_port: int
    storage_classes: int
    query_models: list[str]
    transfer_syntaxes: list[str]
    who_may_store: str
    who_may_query: str

    @property
    def commands(self) -> list[tuple[str, str]]:
        """(what it does, the command line) for DCMTK's tools, to copy."""
        target = [
            "-aet",
            CALLING_EXAMPLE,
            "-aec",
            self.ae_title,
            self.host,
            str(self.port),
        ]
        lines = [
            ("Test the connection (C-ECHO)", ["echoscu", "-v", *target]),
            ("Send files (C-STORE)", ["storescu", "-v", "+sd", "+r", *target, "images/"]),
            (
                "Find studies (C-FIND, study root)",
                [
                    "findscu",
                    "-v",
                    "-S",
                    "-k",
                    "QueryRetrieveLevel=STUDY",
                    "-k",
                    "PatientName=*",
                    "-k",
                    "StudyInstanceUID",
                    *target,
                ],
            ),
        ]
        if self.tls_port:
            # The modality's own key and certificate, and the CA that signed the archive's.
            tls = ["+tls", "modality.key", "modality.pem", "+cf", "archive-ca.pem"]
            address = [*target[:-1], str(self.tls_port)]
            lines.append(
                ("Send over DICOM TLS", ["storescu", "-v", *tls, "+sd", "+r", *address, "images/"])
            )
        return [(what, shlex.join(argv)) for what, argv in lines]


def connection_facts(tenant: Tenant) -> ConnectionFacts:
    """The facts for `tenant`, in its schema (its node policy is read there)."""
    # Read, not created: a page must not insert the settings row (the gateway's first
    # association, in its own connection, would then wait on it).
    row = TenantSettings.objects.filter(pk=SINGLETON_ID).first() or TenantSettings()
    query_models = sorted(
        {
            f"{root.value.title()} Root {op.value.upper()}"
            for root, op in queryretrieve.SOP_CLASSES.values()
        }
    )
    return ConnectionFacts(
        ae_title=tenant.ae_title or "",
        host=settings.PORTAL_DICOM_PUBLIC_HOST,
        port=settings.PORTAL_DICOM_PORT,
        tls_port=settings.PORTAL_DICOM_TLS_PORT,
        storage_classes=len(AllStoragePresentationContexts),
        query_models=query_models,
        transfer_syntaxes=[UID(uid).name for uid in TRANSFER_SYNTAXES],
        who_may_store=(
            "only the remote nodes listed in Settings (AE title and address)"
            if row.require_known_nodes
            else "any node that calls this AE title"
        ),
        who_may_query=(
            "any node"
            if row.query_retrieve_from_any_node
            else "only the remote nodes listed in Settings (AE title and address)"
        ),
    )
