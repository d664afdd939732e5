"""The DICOM gateway: one listening AE for every tenant, routed by the called AE title.

It answers C-ECHO, stores what C-STORE sends, and serves Query/Retrieve (C-FIND, C-MOVE,
C-GET, patient and study root; see dicomnet/queryretrieve.py) from the called tenant's index.
"""

import contextlib
import copy
import dataclasses
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

from django.conf import settings
from django.db import connections, transaction
from django_tenants.utils import tenant_context
from pydicom.dataset import Dataset
from pydicom.uid import AllTransferSyntaxes, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from configuration.selectors import node_admission
from configuration.services import node_seen
from dicomnet import queryretrieve, receive, tls
from dicomnet.presence import Presence
from dicomnet.receive import ReceivedFile
from dicomnet.status import status_dataset
from portal.dbbudget import recycle_over_budget
from portal.schemas import tenant_connection
from studies.dicom import DicomParseError, ParsedInstance, parse_file
from studies.ingest import (
    BATCH_SIZE,
    ItemResult,
    JobStaging,
    ingest_item_reject,
    ingest_job_create,
    ingest_job_submit,
    ingest_staged_process,
)
from studies.ingest.outcomes import Refusal as IngestRefusal
from studies.ingest.outcomes import StoreStatus, store_status
from studies.models import IngestItem, IngestJob, IngestSource, ItemOutcome
from tenants.figures import schema_behind
from tenants.models import Tenant, TenantStatus

logger = logging.getLogger(__name__)

DEFAULT_AE_TITLE = "PORTAL"
MAX_ASSOCIATIONS = 64
# Connections that have not yet asked for an association (or finished their TLS handshake),
# kept apart from the association slots: past these many the oldest is dropped, as it is
# past PORTAL_DICOM_PEER_ASSOCIATIONS from one address. A modality asks within
# milliseconds of connecting; a connection that stays silent is the one to go.
MAX_PENDING_CONNECTIONS = 16

# A-ASSOCIATE-RJ fields (PS3.8 9.3.4): rejected-permanent, by the service user.
REJECTED_PERMANENT = 0x01
SERVICE_USER = 0x01
# ... or rejected-transient, by the service provider (presentation), local limit exceeded.
REJECTED_TRANSIENT = 0x02
SERVICE_PROVIDER_PRESENTATION = 0x03
LOCAL_LIMIT_EXCEEDED = 0x02
# How often an open association looks at its tenant's status again (a suspension stops it).
TENANT_RECHECK_SECONDS = 5.0
NO_REASON_GIVEN = 0x01
CALLED_AE_NOT_RECOGNISED = 0x07

# C-STORE statuses (PS3.4 B.2.3): one table for DIMSE and STOW-RS (studies/ingest/outcomes.py).
SUCCESS = StoreStatus.SUCCESS
OUT_OF_RESOURCES = StoreStatus.OUT_OF_RESOURCES
CANNOT_UNDERSTAND = StoreStatus.CANNOT_UNDERSTAND

_UNSAFE_NAME = re.compile(r"[^0-9A-Za-z.]+")

# An archive keeps what it receives as it was sent, so every public transfer syntax is taken.
TRANSFER_SYNTAXES = [str(uid) for uid in AllTransferSyntaxes]
# Query/Retrieve identifiers are small: the two little endian syntaxes every peer offers.
QUERY_TRANSFER_SYNTAXES = [str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)]


@dataclass(frozen=True)
class Refusal:
    """Why an association is rejected: the A-ASSOCIATE-RJ diagnostic and a sentence for logs."""

    diagnostic: int
    reason: str


@dataclass
class Session:
    """One accepted association: its tenant, its peer and the ingest job it fills."""

    tenant: Tenant
    calling_ae: str
    address: str
    job: IngestJob | None = None
    outcomes: dict[str, int] = field(default_factory=dict)
    checked_at: float = field(default_factory=time.monotonic)  # the tenant's status, last
    # C-STOREs refused from their bytes alone: answered at once, recorded later (below).
    refused: list["PendingStore"] = field(default_factory=list)

    @property
    def peer(self) -> str:
        return f"{self.calling_ae}@{self.address}"

    def job_ensure(self) -> IngestJob:
        """The association's ingest job, opened on its first object (in the tenant's schema)."""
        if self.job is None:
            self.job = ingest_job_create(source=IngestSource.DIMSE, description=f"from {self.peer}")
        return self.job


def tenant_for_called_ae(called_ae: str) -> Tenant | None:
    """The live tenant whose AE title is exactly `called_ae` (read in the public schema)."""
    called_ae = called_ae.strip()
    if not called_ae:
        return None
    tenant_connection().set_schema_to_public()
    return Tenant.objects.filter(ae_title=called_ae).first()


@dataclass(frozen=True)
class Admission:
    """An accepted association request: its tenant, and whether the peer may query and
    retrieve (C-FIND, C-MOVE, C-GET) or only echo and store."""

    tenant: Tenant
    may_query: bool


def association_check(
    *, called_ae: str, calling_ae: str, address: str, certificate: str = ""
) -> tuple[Admission | None, Refusal | None]:
    """The tenant an association request reaches, or why it must be rejected.
    `certificate`: the SHA-256 of the TLS client certificate the peer presented, if any.

    An unknown title and a known title whose tenant does not accept this peer get the same
    A-ASSOCIATE-RJ, so titles cannot be enumerated from outside."""
    tenant = tenant_for_called_ae(called_ae)
    if tenant is None:
        return None, Refusal(CALLED_AE_NOT_RECOGNISED, "called AE title not recognised")
    if not tenant.is_usable:
        # Same answer as an unknown title: a suspended hospital's title is not revealed.
        return None, Refusal(CALLED_AE_NOT_RECOGNISED, f"tenant {tenant.slug} is {tenant.status}")
    with tenant_context(tenant):
        admitted = node_admission(calling_ae=calling_ae, address=address, certificate=certificate)
        if admitted.allowed:
            node_seen(calling_ae=calling_ae)  # "last association" on the settings page
    if not admitted.allowed:
        return None, Refusal(
            CALLED_AE_NOT_RECOGNISED,
            f"calling AE title and address are not among tenant {tenant.slug}'s known nodes",
        )
    return Admission(tenant, admitted.may_query), None


def connection_keep() -> None:
    """Keep the association thread's database connection for the association's life: a
    modality sends a C-STORE every few milliseconds, and Django's per-request
    `close_old_connections` (with `CONN_MAX_AGE=0`) would start a PostgreSQL backend for
    each one (profiled: more server CPU than the whole ingest). Only a connection that
    failed is checked, and replaced if it is unusable."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None and conn.errors_occurred:
            if not conn.is_usable():
                conn.close()
            conn.errors_occurred = False


def command_check(command: C_STORE, parsed: ParsedInstance) -> None:
    """Refuse a C-STORE whose Affected SOP Class and Instance UIDs are not the data set's
    (PS3.7 9.3.1.1): the archive would file one object under another's name."""
    for what, said, holds in (
        ("Instance", str(command.AffectedSOPInstanceUID or ""), parsed.sop_instance_uid),
        ("Class", str(command.AffectedSOPClassUID or ""), parsed.sop_class_uid),
    ):
        said = said.strip().rstrip("\x00")
        if said != holds:
            named = f"SOP {what} UID {said[:64]!r}" if said else f"no SOP {what} UID"
            raise DicomParseError(
                IngestRefusal.COMMAND_MISMATCH,
                f"The C-STORE names {named}, the data set {holds}.",
            )


@dataclass(eq=False)
class PendingStore:
    """One received C-STORE waiting for its batch; the batch's leader fills in the result."""

    session: Session
    sop_instance_uid: str
    received: ReceivedFile
    parsed: ParsedInstance | None = None
    refusal: DicomParseError | None = None  # why its bytes alone refused it
    result: ItemResult | None = None
    failed: bool = False
    done: bool = False

    def adopt_into(self, staging: JobStaging) -> IngestItem:
        """The received file renamed into `staging`'s job, named after its SOP Instance UID."""
        uid = _UNSAFE_NAME.sub("_", self.sop_instance_uid)[:64] or "instance"
        received = self.received
        return staging.adopt(
            name=f"{uid}.dcm", path=received.path, size=received.size, sha256=received.sha256
        )


class GroupCommit:
    """C-STOREs of one tenant share their commits.

    Each association's thread brings its received file and waits for the answer. When no
    batch of the tenant is being indexed, the thread leads: it takes every C-STORE waiting
    for that tenant (up to `max_batch`), stages and indexes them as one batch (one staging
    commit per association's job, one index transaction), and wakes their threads, each of
    which answers its own modality with its own outcome. While it works, newcomers queue
    up and go together in the next batch. One association alone gets batches of one: its
    answer is never held back to wait for company. Tenants do not wait for each other.
    """

    def __init__(self, *, max_batch: int = BATCH_SIZE) -> None:
        self.max_batch = max_batch
        self._changed = threading.Condition()
        self._waiting: dict[int, list[PendingStore]] = {}
        self._leading: set[int] = set()

    def store(self, pending: PendingStore) -> None:
        """Return once `pending` is done (its `result` set, or `failed`)."""
        key = pending.session.tenant.pk
        with self._changed:
            self._waiting.setdefault(key, []).append(pending)
        while True:
            with self._changed:
                while not pending.done and key in self._leading:
                    self._changed.wait()
                if pending.done:
                    return
                self._leading.add(key)
                queue = self._waiting[key]
                batch, self._waiting[key] = queue[: self.max_batch], queue[self.max_batch :]
            try:
                store_batch(batch)
            except Exception:
                logger.exception("a batch of %d C-STOREs could not be stored", len(batch))
                for each in batch:
                    each.failed = each.result is None
            finally:
                with self._changed:
                    for each in batch:
                        each.done = True
                    self._leading.discard(key)
                    if not self._waiting.get(key):
                        self._waiting.pop(key, None)
                    self._changed.notify_all()


def store_batch(batch: list[PendingStore]) -> None:
    """Adopt each received Part 10 file into its association's job (renamed, never copied),
    then take them all into the archive as one batch, so every C-STORE response tells its
    sender the real outcome after the file is durable and indexed. All of one tenant."""
    staged: list[tuple[IngestItem, PendingStore]] = []
    sessions = {id(p.session): p.session for p in batch}.values()
    with tenant_context(batch[0].session.tenant):
        for session in sessions:
            session.job_ensure()  # outside the transaction: the session keeps it
        # One transaction for the rows and the index: nothing is acknowledged before it
        # commits, so a gateway that dies in it loses nothing a sender was told was stored
        # (the sender sends again), and each C-STORE waits for one commit, not two.
        try:
            with transaction.atomic():
                results = _stage_and_index(batch, sessions, staged)
        except BaseException:
            for item, _pending in staged:  # rolled back: no row points at them
                Path(item.staged_path).unlink(missing_ok=True)
            raise
    for item, pending in staged:
        pending.result = results.get(item.pk)
        pending.failed = pending.result is None


def record_refused(session: Session, refused: list[PendingStore]) -> None:
    with tenant_context(session.tenant):
        # Refused already: quarantine's daily allowance, not the quota, bounds what is kept.
        with JobStaging(session.job_ensure(), quota=False) as staging:
            items = [(pending.adopt_into(staging), pending) for pending in refused]
        for item, pending in items:
            error = cast(DicomParseError, pending.refusal)
            ingest_item_reject(item=item, code=error.code, reason=error.message)


def _stage_and_index(
    batch: list[PendingStore],
    sessions: Iterable[Session],
    staged: list[tuple[IngestItem, PendingStore]],
) -> dict[int, ItemResult]:
    """The batch's transaction: each file adopted into its association's job (appended to
    `staged` as it is), then the batch indexed."""
    for session in sessions:
        if session.job is None:  # created by store_batch, outside the transaction
            raise RuntimeError(f"association {session.peer} has no ingest job")
        # The index checks the quota exactly, in this transaction.
        staging = JobStaging(session.job, claimed=True, quota=False)
        for pending in (p for p in batch if p.session is session):
            staged.append((pending.adopt_into(staging), pending))
        staging.flush()
    return ingest_staged_process(
        items=[item for item, _pending in staged],
        source=IngestSource.DIMSE,
        parsed={item.pk: p.parsed for item, p in staged if p.parsed is not None},
    )


class GatewayServer(tls.DeferredHandshakeMixin, ThreadedAssociationServer):
    """pynetdicom's threaded server; on the TLS port, each connection's thread shakes hands."""


class SharedPortServer(GatewayServer):
    """The threaded server, bound with SO_REUSEPORT: one gateway process per core."""

    def server_bind(self) -> None:
        # pynetdicom's own server_bind ignores socketserver's `allow_reuse_port`.
        cast(socket.socket, self.socket).setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class SupportedContexts(list[PresentationContext]):
    """The server's supported presentation contexts, copied for each association without
    `deepcopy`: pynetdicom deep-copies the whole list per association, and for every storage
    SOP class with every transfer syntax that took 100 ms (profiled) of each association's
    setup. The copies share the immutable UIDs and get lists of their own."""

    def __deepcopy__(self, memo: dict[int, Any]) -> "SupportedContexts":
        copies = SupportedContexts()
        for context in self:
            twin = copy.copy(context)
            twin.__dict__.update(
                {
                    name: list(value)
                    for name, value in vars(context).items()
                    if isinstance(value, list)
                }
            )
            copies.append(twin)
        return copies


class GatewayAE(AE):
    """pynetdicom's AE, whose title a thread may stand in for.

    pynetdicom opens a C-MOVE's sub-association to the destination from the thread of the
    association that asked, calling it with `ae.ae_title`; a destination that checks
    calling AE titles knows the tenant's title (the one its users configured and called),
    not the gateway's. `acting_as` makes that thread's reads of the title the tenant's for
    as long as the move's responses are being produced; other threads see the gateway's.
    """

    def __init__(self, ae_title: str) -> None:
        self._acting = threading.local()
        super().__init__(ae_title=ae_title)

    @property
    def ae_title(self) -> str:
        acting = getattr(getattr(self, "_acting", None), "title", None)
        return acting or str(AE.ae_title.fget(self))  # type: ignore[attr-defined]

    @ae_title.setter
    def ae_title(self, value: str) -> None:
        AE.ae_title.fset(self, value)  # type: ignore[attr-defined]

    def acting_as(self, title: str, responses: Iterator[Any]) -> Iterator[Any]:
        """`responses`, produced while this thread's AE title reads as `title`."""
        previous = getattr(self._acting, "title", None)
        self._acting.title = title
        try:
            yield from responses
        finally:
            self._acting.title = previous


class DicomGateway:
    """The application entity, its handlers and the sessions of the open associations.

    pynetdicom runs each association in its own thread; every handler of one association
    runs in that thread, so its database connection is that thread's own. Handlers enter
    the tenant's schema for each call and leave it in `finally` (tenant_context does).
    """

    def __init__(self, *, ae_title: str = DEFAULT_AE_TITLE) -> None:
        self.ae_title = ae_title
        self.ae = GatewayAE(ae_title)
        # pynetdicom counts silent connections as associations too: they have slots of
        # their own here (see `connection_opened`), and `_over_limits` keeps the 64.
        self.ae.maximum_associations = MAX_ASSOCIATIONS + MAX_PENDING_CONNECTIONS
        # A silent peer is aborted and its slot freed; negotiation has 30 s (pynetdicom's).
        self.ae.network_timeout = float(settings.PORTAL_DICOM_IDLE_TIMEOUT)
        self.ae.acse_timeout = 30.0
        # The acceptor has no 128-context limit (that bounds what a requestor proposes).
        # Both roles: a C-STORE requestor proposes no role and gets us as SCP; a C-GET
        # requestor proposes itself as storage SCP (PS3.4 C.4.3) and gets us as its SCU.
        for context in AllStoragePresentationContexts:
            self.ae.add_supported_context(
                str(context.abstract_syntax), TRANSFER_SYNTAXES, scu_role=True, scp_role=True
            )
        self.ae.add_supported_context(Verification, TRANSFER_SYNTAXES[:4])
        for sop_class in queryretrieve.SOP_CLASSES:
            self.ae.add_supported_context(sop_class, QUERY_TRANSFER_SYNTAXES)
        self._sessions: dict[Association, Session] = {}
        # Connections not yet associated: socket -> peer address, oldest first.
        self._pending: dict[socket.socket, str] = {}
        self._lock = threading.Lock()
        self.commits = GroupCommit()
        self.presence: Presence | None = None

    @property
    def handlers(self) -> list[Any]:
        return [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_C_MOVE, self._on_move),
            (evt.EVT_C_GET, self._on_get),
        ]

    def association_counts(self) -> dict[str, int]:
        """Open associations per tenant slug, now."""
        with self._lock:
            sessions = list(self._sessions.values())
        counts: dict[str, int] = {}
        for session in sessions:
            counts[session.tenant.slug] = counts.get(session.tenant.slug, 0) + 1
        return counts

    def publish_presence(self, label: str = "") -> None:
        """Tell the platform page, through Redis, that this process serves and what it holds."""
        if self.presence is None:
            self.presence = Presence(self.association_counts, label=label)
            self.presence.start()

    def server(
        self,
        host: str,
        port: int,
        *,
        shared: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> ThreadedAssociationServer:
        """A bound server; run it with `serve_forever()` (in a thread to not block).
        `shared`: other gateway processes listen on the same port (SO_REUSEPORT), and the
        kernel spreads new associations among them. `ssl_context`: a DICOM TLS port."""
        server = self.ae.make_server(
            (host, port),
            evt_handlers=self.handlers,
            ssl_context=ssl_context,
            server_class=SharedPortServer if shared else GatewayServer,
            request_handler=partial(GatewayRequestHandler, gateway=self),
        )
        server.contexts = SupportedContexts(server.contexts)
        return server

    def start(
        self,
        host: str,
        port: int,
        *,
        shared: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> ThreadedAssociationServer:
        """Serve in a daemon thread and return the server (`stop()` ends it)."""
        server = self.server(host, port, shared=shared, ssl_context=ssl_context)
        # What `AE.start_server` does too: `server.shutdown()` expects to find it there.
        self.ae._servers.append(server)
        thread = threading.Thread(target=server.serve_forever, name="dicom-gateway", daemon=True)
        thread.start()
        return server

    def stop(self, *servers: ThreadedAssociationServer, timeout: float = 30.0) -> None:
        """Stop accepting (on every port given), let open associations finish for `timeout`
        s, then abort them."""
        for server in servers:
            server.shutdown()  # pynetdicom's shutdown closes the listening socket, too
        if self.presence is not None:
            self.presence.stop()
        with self._lock:
            open_associations = list(self._sessions)
        deadline = time.monotonic() + timeout
        for assoc in open_associations:
            assoc.join(max(0.0, deadline - time.monotonic()))
            if assoc.is_alive():
                assoc.abort()
                assoc.join(5)

    def receive_directory(self, assoc: Association) -> Path | None:
        """Where `assoc`'s C-STORE data sets are written as they arrive (asked in its network
        thread, per data set): the called tenant's staging area, on its storage root."""
        session = self._sessions.get(assoc)
        if session is None:
            return None
        directory = Path(session.tenant.storage_root) / ".staging"
        directory.mkdir(exist_ok=True)
        return directory

    # -- connections not yet associated -----------------------------------------------------

    def connection_opened(self, connection: socket.socket, address: str) -> None:
        """Count a new connection as pending until its A-ASSOCIATE-RQ arrives; make room by
        dropping the oldest pending connection from the same address, or of all, so
        connections that never speak cannot take the gateway from anyone."""
        with self._lock:
            per_peer = int(settings.PORTAL_DICOM_PEER_ASSOCIATIONS)
            same = [c for c, peer in self._pending.items() if peer == address]
            dropped = same[0] if len(same) >= per_peer else None
            if dropped is None and len(self._pending) >= MAX_PENDING_CONNECTIONS:
                dropped = next(iter(self._pending))
            if dropped is not None:
                dropped_address = self._pending.pop(dropped)
            self._pending[connection] = address
        if dropped is not None:
            logger.warning(
                "connection from %s dropped: it asked for no association and newer ones "
                "were waiting",
                dropped_address,
            )
            with contextlib.suppress(OSError):
                dropped.shutdown(socket.SHUT_RDWR)  # its reader sees the end, the thread ends

    def connection_settled(self, connection: socket.socket | None) -> None:
        """The connection asked for an association, or is gone: no longer pending."""
        with self._lock:
            self._pending.pop(connection, None)  # type: ignore[arg-type]

    # -- the association's thread --------------------------------------------------------

    def run_association(
        self, assoc: Association, reactor: Any, connection: socket.socket | None = None
    ) -> None:
        """The association thread's body: the reactor, then close the job and the connection
        (`connection`: the socket, which pynetdicom forgets once it is closed)."""
        connections.close_all()  # whatever this thread inherited; a new one opens on use
        try:
            reactor()
        finally:
            try:
                session = self._sessions.get(assoc)
                if session is not None:
                    self._finish(session)
            finally:
                # Only now: `stop()` waits for the associations it finds here, and closing
                # the job belongs to the association.
                with self._lock:
                    self._sessions.pop(assoc, None)
                self.connection_settled(connection)
                recycle_over_budget()
                connections.close_all()

    def _finish(self, session: Session) -> None:
        counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(session.outcomes.items()))
        logger.info(
            "association ended: %s -> %s (tenant %s): %s",
            session.peer,
            session.tenant.ae_title,
            session.tenant.slug,
            counts or "nothing stored",
        )
        self._record_refused(session)
        if session.job is None:
            return
        try:
            with tenant_context(session.tenant):
                ingest_job_submit(job=session.job, run_now=True)
        except Exception:
            logger.exception("could not close ingest job %s of %s", session.job.pk, session.peer)

    def _on_requested(self, event: Event) -> None:
        assoc = event.assoc
        self.connection_settled(_connection_of(assoc))
        request = cast(A_ASSOCIATE, assoc.requestor.primitive)
        called_ae = str(request.called_ae_title or "").strip()
        calling_ae = str(request.calling_ae_title or "").strip()
        address = str(assoc.requestor.address)
        certificate = tls.peer_certificate_sha256(assoc)
        try:
            admission, refusal = association_check(
                called_ae=called_ae, calling_ae=calling_ae, address=address, certificate=certificate
            )
        except Exception:
            logger.exception(
                "association check failed: %s@%s -> %s", calling_ae, address, called_ae
            )
            admission, refusal = None, Refusal(NO_REASON_GIVEN, "internal error")
        if refusal is not None or admission is None:
            reason = refusal.reason if refusal else "internal error"
            logger.warning(
                "association rejected: %s@%s -> %s: %s", calling_ae, address, called_ae, reason
            )
            assoc.acse.send_reject(
                REJECTED_PERMANENT,
                SERVICE_USER,
                refusal.diagnostic if refusal else NO_REASON_GIVEN,
            )
            # Wait until the A-ASSOCIATE-RJ is on the wire: the connection closes right after.
            assoc.kill()
            return
        tenant = admission.tenant
        if not admission.may_query:
            # Negotiation has not begun: this association is offered no Query/Retrieve
            # context, so a peer that is not a listed node cannot even ask.
            assoc.acceptor.supported_contexts = [
                context
                for context in assoc.acceptor.supported_contexts
                if str(context.abstract_syntax) not in queryretrieve.SOP_CLASSES
            ]
        # The gate may read the database: before the lock, so the check of the limits and
        # the registration below stay one step that concurrent associations cannot split.
        full = f"tenant {tenant.slug} is being upgraded" if schema_behind(tenant) else ""
        with self._lock:
            full = full or self._over_limits(tenant, address)
            if not full:
                self._sessions[assoc] = Session(
                    tenant=tenant, calling_ae=calling_ae, address=address
                )
        if full:
            logger.warning(
                "association rejected: %s@%s -> %s: %s", calling_ae, address, called_ae, full
            )
            assoc.acse.send_reject(
                REJECTED_TRANSIENT, SERVICE_PROVIDER_PRESENTATION, LOCAL_LIMIT_EXCEEDED
            )
            assoc.kill()
            return
        logger.info(
            "association accepted: %s@%s -> %s (tenant %s)%s%s",
            calling_ae,
            address,
            called_ae,
            tenant.slug,
            f", TLS client certificate {certificate[:16]}…" if certificate else "",
            "" if admission.may_query else ", store and echo only",
        )

    def _over_limits(self, tenant: Tenant, address: str) -> str:
        """Why one more association for `tenant` from `address` is over a limit, or "".
        Called holding the lock."""
        sessions = list(self._sessions.values())
        per_tenant = int(settings.PORTAL_DICOM_TENANT_ASSOCIATIONS)
        per_peer = int(settings.PORTAL_DICOM_PEER_ASSOCIATIONS)
        if sum(1 for s in sessions if s.tenant.pk == tenant.pk) >= per_tenant:
            return f"tenant {tenant.slug} holds {per_tenant} associations, its limit"
        if sum(1 for s in sessions if s.address == address) >= per_peer:
            return f"{address} holds {per_peer} associations, its limit"
        if len(sessions) >= MAX_ASSOCIATIONS:
            return f"the gateway holds {MAX_ASSOCIATIONS} associations, its limit"
        return ""

    def _tenant_usable(self, session: Session) -> bool:
        """Whether the association's tenant may still be served: its status is read again
        every TENANT_RECHECK_SECONDS, so a suspension stops an open association too."""
        now = time.monotonic()
        if now - session.checked_at < TENANT_RECHECK_SECONDS:
            return session.tenant.is_usable
        session.checked_at = now
        tenant_connection().set_schema_to_public()
        status = Tenant.all_objects.filter(pk=session.tenant.pk).values_list("status").first()
        session.tenant.status = status[0] if status else TenantStatus.DELETED
        return session.tenant.is_usable

    def _on_echo(self, event: Event) -> int:
        return SUCCESS

    def _on_store(self, event: Event) -> Dataset | int:
        session = self._sessions.get(event.assoc)
        if session is None:  # cannot happen: unaccepted associations get no C-STORE
            return OUT_OF_RESOURCES
        sop_instance_uid = str(cast(C_STORE, event.request).AffectedSOPInstanceUID or "")
        connection_keep()
        if not self._tenant_usable(session):
            logger.warning(
                "C-STORE refused: %s from %s: tenant %s is %s",
                sop_instance_uid,
                session.peer,
                session.tenant.slug,
                session.tenant.status,
            )
            return status_dataset(
                OUT_OF_RESOURCES, f"This archive is {session.tenant.status}; it takes nothing now."
            )
        received = receive.received_file(event)
        if received is None or received.error:
            reason = received.error if received else "The object was not received into a file."
            logger.warning(
                "C-STORE refused: %s from %s (tenant %s): %s",
                sop_instance_uid,
                session.peer,
                session.tenant.slug,
                reason,
            )
            return status_dataset(OUT_OF_RESOURCES, reason)
        try:
            parsed = parse_file(received.path, max_bytes=settings.PORTAL_MAX_INSTANCE_BYTES)
            command_check(cast(C_STORE, event.request), parsed)
        except DicomParseError as error:
            return self._refuse_from_bytes(session, sop_instance_uid, received, error)
        connection_keep()
        pending = PendingStore(session, sop_instance_uid, received, parsed)
        self.commits.store(pending)
        item = pending.result
        if item is None:
            logger.error("C-STORE of %s from %s failed", sop_instance_uid, session.peer)
            return status_dataset(OUT_OF_RESOURCES, "The archive could not store the object.")
        session.outcomes[item.outcome] = session.outcomes.get(item.outcome, 0) + 1
        status = store_status(outcome=item.outcome, reason_code=item.reason_code)
        if status != SUCCESS:
            logger.warning(
                "C-STORE refused: %s from %s (tenant %s): %s",
                sop_instance_uid,
                session.peer,
                session.tenant.slug,
                item.reason,
            )
        return status_dataset(status, item.reason if status != SUCCESS else "")

    def _refuse_from_bytes(
        self,
        session: Session,
        sop_instance_uid: str,
        received: ReceivedFile,
        error: DicomParseError,
    ) -> Dataset | int:
        """Answer a C-STORE whose bytes alone refuse it without waiting for the database:
        the file is set aside (renamed) and recorded, quarantined with its reason, after
        the association (or once a batch of them has gathered)."""
        kept = received.path.with_name(f"{received.path.name}.refused")
        received.path.replace(kept)  # the receive layer removes what is left after the answer
        session.refused.append(
            PendingStore(
                session,
                sop_instance_uid,
                dataclasses.replace(received, path=kept),
                refusal=error,
            )
        )
        if len(session.refused) >= BATCH_SIZE:
            self._record_refused(session)
        logger.warning(
            "C-STORE refused: %s from %s (tenant %s): %s",
            sop_instance_uid,
            session.peer,
            session.tenant.slug,
            error.message,
        )
        status = store_status(outcome=ItemOutcome.REJECTED, reason_code=error.code)
        session.outcomes[ItemOutcome.REJECTED] = session.outcomes.get(ItemOutcome.REJECTED, 0) + 1
        return status_dataset(status, error.message)

    def _record_refused(self, session: Session) -> None:
        """Record the files refused from their bytes in the association's job, each kept
        in the tenant's quarantine with the reason its sender was given."""
        refused, session.refused = session.refused, []
        if not refused:
            return
        connection_keep()
        try:
            record_refused(session, refused)
        except Exception:
            logger.exception(
                "could not record %d refused C-STOREs of %s", len(refused), session.peer
            )

    # Query/Retrieve: pynetdicom consumes what these return in this association's thread.
    # They read the index inside the tenant's schema before returning; what they return
    # yields without touching the database.

    def _on_find(self, event: Event) -> Iterator[Any]:
        session = self._session(event)
        return queryretrieve.find(
            tenant=session.tenant,
            peer=session.peer,
            sop_class_uid=str(event.context.abstract_syntax),
            identifier=event.identifier,
            is_cancelled=lambda: bool(event.is_cancelled),
        )

    def _on_move(self, event: Event) -> Iterator[Any]:
        session = self._session(event)
        moves = queryretrieve.move(
            tenant=session.tenant,
            peer=session.peer,
            sop_class_uid=str(event.context.abstract_syntax),
            identifier=event.identifier,
            destination_ae=str(event.move_destination or ""),
            is_cancelled=lambda: bool(event.is_cancelled),
        )
        # The sub-association calls the destination as the tenant's AE title.
        return self.ae.acting_as(session.tenant.ae_title, moves)

    def _on_get(self, event: Event) -> Iterator[Any]:
        session = self._session(event)
        return queryretrieve.get(
            tenant=session.tenant,
            peer=session.peer,
            sop_class_uid=str(event.context.abstract_syntax),
            identifier=event.identifier,
            is_cancelled=lambda: bool(event.is_cancelled),
        )

    def _session(self, event: Event) -> Session:
        """The association's session, its connection checked if it failed before."""
        session = self._sessions.get(event.assoc)
        if session is None:  # cannot happen: unaccepted associations get no requests
            raise RuntimeError("request on an association without a session")
        connection_keep()
        if not self._tenant_usable(session):  # pynetdicom answers a failure status
            raise PermissionError(f"tenant {session.tenant.slug} is {session.tenant.status}")
        return session


# What a C-STORE-RQ must carry for pynetdicom to serve it, less the Affected SOP Instance UID.
_STORE_SERVED_WITHOUT_INSTANCE = tuple(
    keyword for keyword in C_STORE.REQUEST_KEYWORDS if keyword != "AffectedSOPInstanceUID"
)


def _connection_of(assoc: Association) -> socket.socket | None:
    """The socket `assoc` runs on (an `ssl.SSLSocket` on the TLS port)."""
    return getattr(getattr(getattr(assoc, "dul", None), "socket", None), "socket", None)


def serve_request(serve: Any, msg: Any, context_id: int) -> None:
    """pynetdicom drops a request without a required parameter unanswered, and its sender
    waits for its DIMSE timeout (30 s for storescu). A C-STORE whose Affected SOP Instance
    UID is empty or all spaces (both decode to none) is served like any other, so that
    `command_check` refuses it at once with its reason, recorded like other refusals."""
    if isinstance(msg, C_STORE) and msg.AffectedSOPInstanceUID is None:
        # On this message only: the class keeps pynetdicom's list.
        msg.REQUEST_KEYWORDS = _STORE_SERVED_WITHOUT_INSTANCE  # type: ignore[assignment]
    serve(msg, context_id)


class GatewayRequestHandler(RequestHandler):
    """pynetdicom's connection handler with TCP_NODELAY and our association thread body."""

    def __init__(self, request: Any, client_address: Any, server: Any, *, gateway: DicomGateway):
        # Set first: the base class handles the connection from inside __init__.
        self.gateway = gateway
        super().__init__(request, client_address, server)

    def handle(self) -> None:
        self.gateway.connection_opened(self.request, str(self.client_address[0]))
        # On the TLS port: the handshake, here in the connection's thread, with a deadline.
        if not tls.handshake(self.request):
            self.gateway.connection_settled(self.request)
            return
        # Without it, Nagle's algorithm and the peer's delayed ACKs stall every small
        # response PDU (C-STORE-RSP) by up to 40 ms.
        try:
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            logger.debug("TCP_NODELAY could not be set for %s", self.client_address)
        assoc = self._create_association()
        # C-STORE data sets go straight into files, size-limited and hashed as they arrive.
        receive.install(
            assoc,
            directory=self.gateway.receive_directory,
            max_bytes=lambda: int(settings.PORTAL_MAX_INSTANCE_BYTES),
        )
        # Thread.start() calls `self.run`; wrapping it gives the thread a fresh database
        # connection, closes the job whatever ends the association, and closes the connection.
        assoc.run = partial(  # type: ignore[method-assign]
            self.gateway.run_association, assoc, assoc.run, self.request
        )
        assoc._serve_request = partial(serve_request, assoc._serve_request)  # type: ignore[method-assign]
        evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
        assoc.start()
