"""The tenant-boundary self-test: two throw-away tenants, A filled with marked data, and every
route of the tenant site probed as B (B's admin session, B's token, A's stolen token and
cookie) with A's ids and UIDs. A leak is any of A's markers in an answer from B's site, or any
of A's rows changed by B's requests. Both tenants are purged afterwards.

Run by `manage.py tenant selftest` after an upgrade, and by the test suite, so that a new
route without isolation fails CI. DIMSE is probed too, through a gateway started for the
purpose (tenants/selftest_dimse.py).
"""

import io
import itertools
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.db import connection, transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.converters import IntConverter
from django.urls.resolvers import RoutePattern
from django.utils import timezone
from django_tenants.utils import schema_context
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from accounts.models import ApiToken, TokenScope, User
from accounts.services import api_token_create, user_create
from configuration.models import RemoteNode
from portal.management.commands.demo_seed import synthetic_instance
from studies.ingest import ingest_item_stage, ingest_job_create, ingest_job_submit
from studies.models import IngestJob, IngestSource, Instance, Series, Study
from tenants import services
from tenants.links import tenant_base_url
from tenants.models import SelftestRun, SelftestStatus, Tenant
from tenants.selftest_dimse import probe_dimse

# Safe methods first: B's own POSTs may log B out or revoke B's token (ids collide across
# schemas), which would blind the probes that follow.
METHODS = ("get", "post")
PARAMETER = re.compile(r"<(?:\w+:)?(\w+)>")
SKIPPED = frozenset({"account/logout/"})


@dataclass
class Side:
    """One throw-away tenant and what was put in it."""

    tenant: Tenant
    marker: str
    password: str
    admin: str = "admin"
    token: str = ""
    ids: list[int] = field(default_factory=list)
    uids: list[str] = field(default_factory=list)


@dataclass
class Leak:
    method: str
    url: str
    credential: str
    what: str


@dataclass
class SelftestReport:
    routes: int = 0
    probes: int = 0
    errors: list[str] = field(default_factory=list)  # 500s: not leaks, but worth fixing
    leaks: list[Leak] = field(default_factory=list)
    seconds: float = 0.0
    # Answers that showed B its own data, per credential: proof that the probe was not blind
    # (a session that was never logged in finds no leak either).
    own: dict[str, int] = field(default_factory=dict)
    dimse: str = ""  # what the DIMSE half did, or why it did not run

    @property
    def ok(self) -> bool:
        return not self.leaks


def _fill(side: Side) -> None:
    """A study (through the real ingest), a user, a token and a node, each carrying the
    side's marker; the ingest leaves a job behind too."""
    with schema_context(side.tenant.schema_name):
        ds = Dataset()
        ds.PatientName, ds.PatientID = f"SELFTEST^{side.marker}", side.marker
        ds.StudyDescription = side.marker
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.Modality, ds.SeriesDescription = "CT", side.marker
        series = Dataset()
        series.Modality, series.SeriesInstanceUID = ds.Modality, ds.SeriesInstanceUID
        series.SeriesNumber, series.SeriesDescription = 1, side.marker
        data = synthetic_instance(ds, "CT", series, 1)
        job = ingest_job_create(source=IngestSource.UPLOAD, description=side.marker)
        ingest_item_stage(job=job, name=f"{side.marker}.dcm", stream=io.BytesIO(data))
        ingest_job_submit(job=job, run_now=True)
        user = user_create(
            username=f"u-{side.marker.lower()}", email="selftest@example.org", role="operator"
        )
        token, side.token = api_token_create(
            user=User.objects.get(username=side.admin), name=side.marker, scope=TokenScope.FULL
        )
        node = RemoteNode.objects.create(
            ae_title=side.marker[:16], host="192.0.2.10", port=104, description=side.marker
        )
        study = Study.objects.get()
        series_row = Series.objects.get()
        instance = Instance.objects.get()
        side.uids = [
            study.study_instance_uid,
            series_row.series_instance_uid,
            instance.sop_instance_uid,
        ]
        side.ids = [study.pk, series_row.pk, instance.pk, user.pk, token.pk, node.pk, job.pk]


def _fingerprint(side: Side) -> tuple[Any, ...]:
    """What B's requests must not change in A."""
    with schema_context(side.tenant.schema_name):
        return (
            list(User.objects.order_by("pk").values_list("pk", "username", "is_active", "role")),
            list(ApiToken.objects.order_by("pk").values_list("pk", "revoked_at")),
            list(Study.objects.order_by("pk").values_list("pk", "study_instance_uid")),
            Instance.objects.count(),
            list(RemoteNode.objects.order_by("pk").values_list("pk", "ae_title", "host", "port")),
            IngestJob.objects.count(),
        )


def _routes(
    patterns: list[Any] | None = None, prefix: str = ""
) -> Iterator[tuple[str, list[tuple[str, bool]]]]:
    """(route, [(parameter, is it an int)]) of every path() of the tenant URLconf."""
    if patterns is None:
        patterns = get_resolver("portal.urls_tenants").url_patterns
    for entry in patterns:
        pattern = entry.pattern
        if not isinstance(pattern, RoutePattern):
            continue  # regular expressions: none in the tenant URLconf carries an id
        route = prefix + str(pattern)  # a RoutePattern prints as its route
        if isinstance(entry, URLResolver):
            yield from _routes(entry.url_patterns, route)
        elif isinstance(entry, URLPattern):
            converters = RoutePattern(route).converters.items()
            yield route, [(name, isinstance(kind, IntConverter)) for name, kind in converters]


def _fillings(params: list[tuple[str, bool]], victim: Side) -> Iterator[dict[str, str]]:
    """A's ids and UIDs in every parameter: each int parameter takes each of A's ids in
    turn; text parameters take A's UIDs in order (study, series, instance)."""
    if not params:
        yield {}
        return
    ints = [name for name, is_int in params if is_int]
    texts = [name for name, is_int in params if not is_int]
    for pk in victim.ids if ints else [0]:
        values = {p: str(pk) for p in ints}
        uids = itertools.cycle(victim.uids)
        values.update({p: next(uids) for p in texts})
        yield values


def _fill_route(route: str, values: dict[str, str]) -> str:
    return PARAMETER.sub(lambda match: values[match.group(1)], route)


def _client(side: Side, authorization: str = "") -> tuple[Client, str, bool]:
    base = urlsplit(tenant_base_url(side.tenant))
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    return (
        Client(HTTP_HOST=base.netloc, **headers),  # type: ignore[arg-type]
        base.path.rstrip("/"),
        base.scheme == "https",
    )


def _logged_in(side: Side) -> Client:
    client, prefix, secure = _client(side)
    response = client.post(
        f"{prefix}/account/login/",
        {"username": side.admin, "password": side.password},
        secure=secure,
    )
    if response.status_code != 302:
        raise RuntimeError(f"the self-test cannot log in to {side.tenant.slug}")
    return client


def _probe_all(
    report: SelftestReport, attacker: Side, victim: Side, credentials: dict[str, Client]
) -> None:
    _, prefix, secure = _client(attacker)
    routes = [(route, params) for route, params in _routes() if route not in SKIPPED]
    report.routes = len(routes)
    urls = [
        f"{prefix}/{_fill_route(route, values)}"
        for route, params in routes
        for values in _fillings(params, victim)
    ]
    marker, own = victim.marker.lower().encode(), attacker.marker.lower().encode()
    report.own = dict.fromkeys(credentials, 0)
    for method, url, (credential, client) in itertools.product(METHODS, urls, credentials.items()):
        response = getattr(client, method)(url, secure=secure)
        report.probes += 1
        if response.status_code >= 500:
            report.errors.append(f"{method.upper()} {url} as {credential}: {response.status_code}")
        body = b"".join(response.streaming_content) if response.streaming else response.content
        body = body.lower()
        if marker in body:
            report.leaks.append(Leak(method.upper(), url, credential, victim.marker))
        report.own[credential] += own in body


def tenant_selftest(
    *, actor: str = "selftest", say: Callable[[str], None] = lambda _: None
) -> SelftestReport:
    """Create A and B, fill both, probe B's site with A's ids and credentials, purge both."""
    started = time.monotonic()
    report = SelftestReport()
    tag = secrets.token_hex(3)
    sides: list[Side] = []
    try:
        for letter in "ab":
            password = secrets.token_urlsafe(18)
            creation = services.tenant_create(
                slug=f"selftest-{tag}-{letter}",
                name=f"Self-test {letter.upper()} {tag}",
                admin_email="selftest@example.org",
                ae_title=f"SELFTEST{tag}{letter}".upper(),  # titles are never reused: random
                created_by=actor,
                admin_password=password,
            )
            side = Side(creation.tenant, f"SELFTEST{letter.upper()}{tag.upper()}", password)
            _fill(side)
            sides.append(side)
            say(f"created and filled {side.tenant.slug}")
        victim, attacker = sides
        before = _fingerprint(victim)
        victim_session = _logged_in(victim)
        stolen_cookie, _, _ = _client(attacker)
        stolen_cookie.cookies = victim_session.cookies
        credentials = {
            "B's admin session": _logged_in(attacker),
            "B's full token": _client(attacker, f"Bearer {attacker.token}")[0],
            "A's token": _client(attacker, f"Bearer {victim.token}")[0],
            "A's session cookie": stolen_cookie,
        }
        _probe_all(report, attacker, victim, credentials)
        say("probed the web site, the API and DICOMweb")
        probe_dimse(report, attacker, victim)
        say(f"DIMSE: {report.dimse}")
        if _fingerprint(victim) != before:
            report.leaks.append(Leak("*", "*", "*", "A's rows changed by B's requests"))
    finally:
        connection.set_schema_to_public()  # type: ignore[attr-defined]
        if connection.in_atomic_block:  # run inside a transaction (the suite): DROP needs it
            with connection.cursor() as cursor:
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for side in sides:
            services.tenant_delete(tenant=side.tenant, actor=actor, confirm_slug=side.tenant.slug)
            services.tenant_purge(tenant=side.tenant, actor=actor)
            say(f"purged {side.tenant.slug}")
    report.seconds = time.monotonic() - started
    return report


def selftest_request(*, actor: str) -> SelftestRun:
    """Queue a self-test run, unless one is queued or running already (that one is returned:
    two at once would only slow each other)."""
    from tenants.tasks import run_selftest

    with transaction.atomic():
        running = SelftestRun.objects.select_for_update().filter(
            status__in=[SelftestStatus.QUEUED, SelftestStatus.RUNNING]
        )
        current = running.first()
        if current is not None:
            return current
        run = SelftestRun.objects.create(requested_by=actor[:150])
        transaction.on_commit(lambda: run_selftest.delay(run.pk))
    return run


def selftest_execute(run_id: int) -> SelftestRun:
    """Carry out a queued run and keep its report on the row."""
    run = SelftestRun.objects.get(pk=run_id)
    run.status = SelftestStatus.RUNNING
    run.save(update_fields=["status"])
    try:
        report = tenant_selftest(actor=f"selftest by {run.requested_by}")
    except Exception as error:
        run.status, run.message = SelftestStatus.ERROR, f"{type(error).__name__}: {error}"[:2000]
        raise
    else:
        run.status = SelftestStatus.PASSED if report.ok else SelftestStatus.LEAKED
        run.routes, run.probes, run.seconds = report.routes, report.probes, report.seconds
        run.leaks = [vars(leak) for leak in report.leaks[:200]]
        run.errors = report.errors[:200]
        run.message = f"DIMSE: {report.dimse}"[:2000]
    finally:
        run.finished_at = timezone.now()
        run.save()
    return run
