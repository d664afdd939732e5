"""Benchmark DICOMweb: QIDO-RS study search latency and WADO-RS series retrieve throughput.

A bench tenant gets `--studies` studies of `--instances-per-study` instances generated
straight into its index (server-side INSERT ... SELECT generate_series, no files), the portal
runs as a real server (gunicorn, DEBUG off), and a single client times QIDO-RS searches by
patient name wildcard, study date range and accession number, then a WADO-RS retrieve of a
500-instance series ingested through the real pipeline. With `--orthanc`, Orthanc with its
DICOMweb plugin gets as many one-instance studies of the same generator as load in
`--orthanc-load-seconds`, and the same queries run against it and against a second portal
tenant of the same size and data.
"""

import argparse
import http.client
import json
import os
import platform
import queue
import random
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from support import (
    cpu_and_memory,
    descendants,
    free_port,
    orthanc_config,
    service,
    setup_django,
)

ROOT = Path(__file__).resolve().parent.parent
# `python bench/dicomweb.py` puts bench/ first on sys.path, where bench/tenants.py would
# shadow the `tenants` app; the repository root goes there instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

ORTHANC = "/usr/sbin/Orthanc"
ORTHANC_DICOMWEB = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
VAR = ROOT / ".var" / "bench-dicomweb"  # stable, so --keep can reuse tenants and Orthanc
UID_ROOT = "1.2.826.0.1.3680043.10.543.7"
DICOM_ACCEPT = 'multipart/related; type="application/dicom"'
TENANT_PREFIX = "bench-dw-"
QUOTA_BYTES = 1 << 50  # generated studies count towards the tenant's quota

# -- the generator: one deterministic function of the study number, in SQL and in Python ----

SURNAMES = (  # noqa: SIM905 (a paragraph reads better than 220 quoted words)
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez "
    "Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson "
    "White Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott "
    "Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter "
    "Roberts Gomez Phillips Evans Turner Diaz Parker Cruz Edwards Collins Reyes Stewart Morris "
    "Morales Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed Kelly "
    "Howard Ramos Kim Cox Ward Richardson Watson Brooks Chavez Wood James Bennett Gray Mendoza "
    "Ruiz Hughes Price Alvarez Castillo Sanders Patel Myers Long Ross Foster Jimenez Powell "
    "Jenkins Perry Russell Sullivan Bell Coleman Butler Henderson Barnes Gonzales Fisher "
    "Vasquez Simmons Romero Jordan Patterson Alexander Hamilton Graham Reynolds Griffin "
    "Wallace Moreno West Cole Hayes Bryant Herrera Gibson Ellis Tran Medina Aguilar Stevens "
    "Murray Ford Castro Marshall Owens Harrison Fernandez Mcdonald Woods Washington Kennedy "
    "Wells Vargas Henry Chen Freeman Webb Tucker Guzman Burns Crawford Olson Simpson Porter "
    "Hunter Gordon Mendez Silva Shaw Snyder Mason Dixon Munoz Hunt Hicks Holmes Palmer Wagner "
    "Black Robertson Boyd Rose Stone Salazar Fox Warren Mills Meyer Rice Schmidt Garza Daniels "
    "Ferguson Nichols Stephens Soto Weaver Ryan Gardner Payne Grant Dunn Kelley Spencer Hawkins "
    "Doe Muller Schneider Fischer Weber Becker Schulz Hoffmann Rossi Russo Ferrari Esposito "
    "Bianchi Dubois Moreau Laurent Lefebvre Bernard Jansen Visser Novak Kowalski Nowak"
).split()
GIVEN_NAMES = (  # noqa: SIM905
    "James Mary John Patricia Robert Jennifer Michael Linda William Elizabeth David Barbara "
    "Richard Susan Joseph Jessica Thomas Sarah Charles Karen Daniel Nancy Matthew Lisa "
    "Anthony Betty Mark Margaret Donald Sandra Steven Ashley Paul Kimberly Andrew Emily "
    "Joshua Donna Kenneth Michelle Kevin Dorothy Brian Carol George Amanda Timothy Melissa "
    "Jane Anna Lukas Sofia Marco Giulia Jan Eva Pierre Claire"
).split()
REFERRING = [
    f"{s}^{g}^^Dr"
    for s, g in zip(SURNAMES[::11], GIVEN_NAMES[::3], strict=False)  # ~20 physicians
]
# (modality, description, SOP class, bytes per instance), repeated for weight.
EXAMS = (
    [("CT", "CT HEAD W/O CONTRAST", "1.2.840.10008.5.1.4.1.1.2", 526_000)] * 3
    + [("CT", "CT CHEST ABDOMEN PELVIS", "1.2.840.10008.5.1.4.1.1.2", 526_000)] * 3
    + [("MR", "MR BRAIN", "1.2.840.10008.5.1.4.1.1.4", 135_000)] * 2
    + [("MR", "MR KNEE LEFT", "1.2.840.10008.5.1.4.1.1.4", 135_000)]
    + [("CR", "CR CHEST PA LAT", "1.2.840.10008.5.1.4.1.1.1", 8_400_000)] * 2
    + [("DX", "DX HAND", "1.2.840.10008.5.1.4.1.1.1.1", 10_000_000)]
    + [("US", "US ABDOMEN", "1.2.840.10008.5.1.4.1.1.6.1", 600_000)]
    + [("MG", "MG SCREENING BILATERAL", "1.2.840.10008.5.1.4.1.1.1.2", 25_000_000)]
    + [("PT", "PET CT WHOLE BODY", "1.2.840.10008.5.1.4.1.1.128", 200_000)]
)
FIRST_DAY = date(2005, 1, 1)
DAYS = 7305  # 20 years


def h(i: int, salt: int) -> int:
    """The generator's hash; pg_temp.h in SQL computes the same."""
    return (i * 2654435761 + salt * 40503) % 2147483647


def patient_of(i: int) -> int:
    """About 1.7 studies per patient, whatever the total: (3i + 4) // 5 (1, 2, 2, 3, 3, 4...)."""
    return (3 * i + 4) // 5


def study_fields(i: int, studies: int, instances_per_study: int) -> dict[str, Any]:
    """Study number i (from 1) as generate_index() writes it; for Orthanc and for checks."""
    p = patient_of(i)
    exam = EXAMS[h(i, 6) % len(EXAMS)]
    seconds = h(i, 5) % 86400
    return {
        "patient_id": f"PID{p:08d}",
        "patient_name": f"{SURNAMES[h(p, 2) % len(SURNAMES)]}^"
        f"{GIVEN_NAMES[h(p, 3) % len(GIVEN_NAMES)]}",
        "birth_date": date(1930, 1, 1) + timedelta(days=h(p, 7) % 30000),
        "sex": "FM"[h(p, 8) % 2],
        "study_uid": f"{UID_ROOT}.1.{i}",
        "study_date": FIRST_DAY + timedelta(days=h(i, 4) % DAYS),
        "study_time": f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}",
        "accession": f"A{i:09d}",
        "study_id": str(1 + h(i, 9) % 9999),
        "description": exam[1],
        "referring": REFERRING[h(i, 12) % len(REFERRING)],
        "modality": exam[0],
        "sop_class": exam[2],
        "series": min(instances_per_study, 1 + h(i, 10) % 4),
    }


GENERATE_SQL = [
    """CREATE OR REPLACE FUNCTION pg_temp.h(i bigint, salt int) RETURNS bigint
       LANGUAGE sql IMMUTABLE AS $$ SELECT (i * 2654435761 + salt * 40503) % 2147483647 $$""",
    """INSERT INTO studies_patient (id, patient_id, name, birth_date, sex)
       SELECT p, 'PID' || lpad(p::text, 8, '0'),
              (%(surnames)s::text[])[1 + pg_temp.h(p, 2) %% %(n_surnames)s] || '^' ||
              (%(given)s::text[])[1 + pg_temp.h(p, 3) %% %(n_given)s],
              date '1930-01-01' + (pg_temp.h(p, 7) %% 30000)::int,
              (ARRAY['F', 'M'])[1 + pg_temp.h(p, 8) %% 2]
       FROM generate_series(1, %(patients)s) AS p""",
    """INSERT INTO studies_study (
           id, study_instance_uid, patient_record_id, patient_name, patient_id,
           patient_birth_date, patient_sex, study_date, study_time, accession_number, study_id,
           description, referring_physician_name, modalities, num_series, num_instances,
           size_bytes, received_at, updated_at, patient_id_issuer, attribute_conflict)
       SELECT i, %(uid_root)s || '.1.' || i, p.id, p.name, p.patient_id, p.birth_date, p.sex,
              date '2005-01-01' + (pg_temp.h(i, 4) %% %(days)s)::int,
              time '00:00' + make_interval(secs => pg_temp.h(i, 5) %% 86400),
              'A' || lpad(i::text, 9, '0'),
              (1 + pg_temp.h(i, 9) %% 9999)::text,
              (%(descriptions)s::text[])[e], (%(referring)s::text[])[r],
              ARRAY[(%(modalities)s::text[])[e]],
              least(%(ips)s, 1 + pg_temp.h(i, 10) %% 4), %(ips)s,
              %(ips)s::bigint * (%(sizes)s::bigint[])[e],
              now() - make_interval(days => ((%(studies)s - i) / 20)::int), now(), '', ''
       FROM generate_series(1, %(studies)s) AS i
       CROSS JOIN LATERAL (SELECT 1 + pg_temp.h(i, 6) %% %(n_exams)s AS e,
                                  1 + pg_temp.h(i, 12) %% %(n_referring)s AS r) AS pick
       JOIN studies_patient AS p ON p.id = (3 * i + 4) / 5""",
    # Series j of a study of k series holds ips / k instances, the first ips %% k one more.
    """INSERT INTO studies_series (
           series_instance_uid, study_id, modality, series_number, description,
           body_part_examined, num_instances, size_bytes, thumbnail, thumbnail_error,
           received_at)
       SELECT %(uid_root)s || '.2.' || s.id || '.' || j, s.id, s.modalities[1], j,
              'Series ' || j, '', n.count,
              n.count * (s.size_bytes / s.num_instances), '', '', s.received_at
       FROM studies_study AS s
       CROSS JOIN LATERAL generate_series(1, s.num_series) AS j
       CROSS JOIN LATERAL (SELECT s.num_instances / s.num_series
                                  + (j <= s.num_instances %% s.num_series)::int AS count) AS n
       WHERE s.study_instance_uid LIKE %(uid_like)s""",
    """INSERT INTO studies_instance (
           sop_instance_uid, series_id, sop_class_uid, transfer_syntax_uid, instance_number,
           rows, columns, number_of_frames, bits_allocated, medium_id, relative_path,
           size_bytes, sha256, received_at)
       SELECT u.sop, se.id, (%(sop_classes)s::text[])[1 + pg_temp.h(st.id, 6) %% %(n_exams)s],
              '1.2.840.10008.1.2.1', k, 512, 512, NULL, 16, %(medium)s,
              st.study_instance_uid || '/' || se.series_instance_uid || '/' || u.sop || '.dcm',
              se.size_bytes / se.num_instances,
              md5(u.sop) || md5(reverse(u.sop)), se.received_at
       FROM studies_series AS se
       JOIN studies_study AS st ON st.id = se.study_id
       CROSS JOIN LATERAL generate_series(1, se.num_instances) AS k
       CROSS JOIN LATERAL (SELECT %(uid_root)s || '.3.' || st.id || '.' || se.series_number
                                  || '.' || k AS sop) AS u
       WHERE st.study_instance_uid LIKE %(uid_like)s""",
    # Explicit ids: move the identity sequences past them for later ORM inserts.
    """SELECT setval(pg_get_serial_sequence('studies_patient', 'id'),
                     (SELECT max(id) FROM studies_patient))""",
    """SELECT setval(pg_get_serial_sequence('studies_study', 'id'),
                     (SELECT max(id) FROM studies_study))""",
]


def generate_index(tenant: Any, studies: int, instances_per_study: int) -> dict[str, float]:
    """Fill the tenant's (empty) index; returns seconds per step."""
    from django.db import connection, transaction
    from django_tenants.utils import schema_context

    from portal.dbroles import as_owner

    params = {
        "surnames": SURNAMES,
        "n_surnames": len(SURNAMES),
        "given": GIVEN_NAMES,
        "n_given": len(GIVEN_NAMES),
        "referring": REFERRING,
        "n_referring": len(REFERRING),
        "descriptions": [e[1] for e in EXAMS],
        "modalities": [e[0] for e in EXAMS],
        "sop_classes": [e[2] for e in EXAMS],
        "sizes": [e[3] for e in EXAMS],
        "n_exams": len(EXAMS),
        "patients": patient_of(studies),
        "studies": studies,
        "ips": instances_per_study,
        "days": DAYS,
        "uid_root": UID_ROOT,
        "uid_like": UID_ROOT + ".1.%",
    }
    steps = ["function", "patients", "studies", "series", "instances", "sequences", "sequences"]
    seconds: dict[str, float] = {}
    with (
        schema_context(tenant.schema_name),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("SELECT id FROM studies_storagemedium ORDER BY priority DESC, id LIMIT 1")
        params["medium"] = cursor.fetchone()[0]
        cursor.execute("SET LOCAL synchronous_commit = off")
        cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
        for step, sql in zip(steps, GENERATE_SQL, strict=True):
            started = time.perf_counter()
            cursor.execute(sql, params if "%(" in sql else None)
            seconds[step] = seconds.get(step, 0) + time.perf_counter() - started
    # After the commit, as autovacuum would: statistics, hint bits and the visibility map
    # (only the tables' owner may vacuum them).
    with as_owner(), schema_context(tenant.schema_name), connection.cursor() as cursor:
        started = time.perf_counter()
        for table in ("studies_patient", "studies_study", "studies_series", "studies_instance"):
            cursor.execute(f"VACUUM (ANALYZE) {table}")
        seconds["vacuum_analyze"] = time.perf_counter() - started
    return seconds


def index_counts(tenant: Any) -> dict[str, int]:
    from django.db import connection
    from django_tenants.utils import schema_context

    with schema_context(tenant.schema_name), connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM studies_patient), (SELECT count(*) FROM studies_study),"
            " (SELECT count(*) FROM studies_series), (SELECT count(*) FROM studies_instance),"
            " (SELECT coalesce(sum(size_bytes), 0) FROM studies_study),"
            " pg_total_relation_size('studies_study') + pg_total_relation_size('studies_series')"
            " + pg_total_relation_size('studies_instance')"
            " + pg_total_relation_size('studies_patient')"
        )
        row = cursor.fetchone()
    keys = ("patients", "studies", "series", "instances", "study_bytes", "table_bytes")
    return dict(zip(keys, (int(v) for v in row), strict=True))


def consistency_errors(tenant: Any) -> int:
    """Studies or series whose counters disagree with the rows below them."""
    from django.db import connection
    from django_tenants.utils import schema_context

    with schema_context(tenant.schema_name), connection.cursor() as cursor:
        cursor.execute(
            """SELECT count(*) FROM studies_study AS st JOIN (
                   SELECT study_id, count(*) AS n, sum(num_instances) AS i, sum(size_bytes) AS b
                   FROM studies_series GROUP BY study_id) AS se ON se.study_id = st.id
               WHERE se.n <> st.num_series OR se.i <> st.num_instances OR se.b <> st.size_bytes"""
        )
        bad = int(cursor.fetchone()[0])
        cursor.execute(
            """SELECT count(*) FROM studies_series AS se JOIN (
                   SELECT series_id, count(*) AS n, sum(size_bytes) AS b
                   FROM studies_instance GROUP BY series_id) AS i ON i.series_id = se.id
               WHERE i.n <> se.num_instances OR i.b <> se.size_bytes"""
        )
        return bad + int(cursor.fetchone()[0])


# -- environment and processes ----------------------------------------------------------------


def rss_mib(pid: int) -> dict[str, dict[str, float]]:
    """VmRSS and VmHWM (peak) of the process and its descendants, by `pid command`."""
    found: dict[str, dict[str, float]] = {}
    for each in descendants(pid):
        try:
            status = Path(f"/proc/{each}/status").read_text()
            cmd = Path(f"/proc/{each}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        values = {}
        for line in status.splitlines():
            key = line.split(":", 1)[0]
            if key in {"VmRSS", "VmHWM"}:
                values[key] = round(int(line.split()[1]) / 1024, 1)
        found[f"{each} {cmd.strip()[:50]}"] = values
    return found


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- tenants ----------------------------------------------------------------------------------


def tenant_label(studies: int, instances_per_study: int) -> str:
    return f"Bench DICOMweb {studies}x{instances_per_study}"


def find_kept_tenant(label: str) -> Any:
    from tenants.models import Tenant

    return (
        Tenant.objects.filter(slug__startswith=TENANT_PREFIX, name=label, status="active")
        .order_by("-pk")
        .first()
    )


def create_tenant(label: str) -> Any:
    from tenants.services import tenant_create

    slug = f"{TENANT_PREFIX}{secrets.token_hex(3)}"
    creation = tenant_create(
        slug=slug,
        name=label,
        admin_email=f"admin@{slug}.example.org",
        created_by="bench",
        quota_bytes=QUOTA_BYTES,
    )
    return creation.tenant


def purge_tenants(tenants: list[Any]) -> None:
    from django.db import connection

    from tenants.services import tenant_delete, tenant_purge

    connection.set_schema_to_public()
    for tenant in tenants:
        tenant_delete(tenant=tenant, actor="bench", confirm_slug=tenant.slug)
        tenant_purge(tenant=tenant, actor="bench")


def read_token(tenant: Any) -> str:
    from django_tenants.utils import schema_context

    from accounts.models import TokenScope, User
    from accounts.services import api_token_create

    with schema_context(tenant.schema_name):
        admin = User.objects.get(username="admin")
        _, raw = api_token_create(user=admin, name="bench dicomweb", scope=TokenScope.READ)
    return raw


def indexed_tenant(
    label_studies: int, instances_per_study: int, keep: bool, created: list[Any]
) -> tuple[Any, dict[str, Any]]:
    """A tenant holding the generated index: kept from an earlier --keep run, or new."""
    label = tenant_label(label_studies, instances_per_study)
    tenant = find_kept_tenant(label) if keep else None
    info: dict[str, Any] = {"label": label}
    if tenant is not None:
        info["reused"] = tenant.slug
    else:
        started = time.perf_counter()
        tenant = create_tenant(label)
        created.append(tenant)
        info["tenant_create_seconds"] = round(time.perf_counter() - started, 2)
        info["loadavg_before"] = load()
        started = time.perf_counter()
        info["generate_steps"] = {
            k: round(v, 2)
            for k, v in generate_index(tenant, label_studies, instances_per_study).items()
        }
        info["generate_seconds"] = round(time.perf_counter() - started, 1)
        info["loadavg_after"] = load()
    info["slug"] = tenant.slug
    info["counts"] = index_counts(tenant)
    return tenant, info


# -- QIDO -------------------------------------------------------------------------------------


def query_plan(studies: int, runs: int, seed: int = 5) -> dict[str, list[dict[str, str]]]:
    """Per query kind, the list of parameter sets the runs cycle through."""
    rng = random.Random(seed)
    names = rng.sample(SURNAMES, 20)
    years = list(range(FIRST_DAY.year, FIRST_DAY.year + 20))
    rng.shuffle(years)
    accessions = [f"A{rng.randint(1, studies):09d}" for _ in range(max(20, runs))]
    return {
        "name": [{"PatientName": f"{n.upper()}*"} for n in names],
        "date": [{"StudyDate": f"{y}0101-{y}1231"} for y in years],
        "accession": [{"AccessionNumber": a} for a in accessions],
    }


def expected_matches(studies: int, plan: dict[str, list[dict[str, str]]]) -> dict[str, int]:
    """How many generated studies each query of the plan matches (the bench's own check)."""
    names, years = [], []
    for i in range(1, studies + 1):
        names.append(study_fields(i, studies, 1)["patient_name"].upper())
        years.append(study_fields(i, studies, 1)["study_date"].strftime("%Y%m%d"))
    expected = {}
    for params in plan["name"]:
        prefix = params["PatientName"].rstrip("*")
        expected[params["PatientName"]] = sum(1 for n in names if n.startswith(prefix))
    for params in plan["date"]:
        low, high = params["StudyDate"].split("-")
        expected[params["StudyDate"]] = sum(1 for d in years if low <= d <= high)
    for params in plan["accession"]:
        expected[params["AccessionNumber"]] = 1
    return expected


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    rank = lambda q: ordered[max(0, -(-q * len(ordered) // 100) - 1)]  # noqa: E731 nearest rank
    return {
        "p50": round(statistics.median(ordered) * 1000, 1),
        "p95": round(rank(95) * 1000, 1),
        "mean": round(statistics.fmean(ordered) * 1000, 1),
        "min": round(ordered[0] * 1000, 1),
        "max": round(ordered[-1] * 1000, 1),
    }


class Target:
    """A DICOMweb server to query: the portal (Host header, bearer token) or Orthanc."""

    def __init__(
        self, name: str, base: str, headers: dict[str, str], no_limit: str | None = None
    ) -> None:
        import requests

        # no_limit: the limit sent for the "no limit" rows (None: no limit parameter at all).
        self.name, self.base, self.no_limit = name, base, no_limit
        self.session = requests.Session()
        self.session.headers.update(headers)

    def search(self, params: dict[str, str]) -> tuple[float, int, int]:
        started = time.perf_counter()
        # `*` unescaped, as viewers send it (encodeURIComponent): Orthanc 1.10 does not
        # match `%2A` as a wildcard.
        response = self.session.get(
            f"{self.base}/studies?{urlencode(params, safe='*^')}",
            headers={"Accept": "application/dicom+json"},
            timeout=120,
        )
        body = response.content
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"{self.name} {params}: {response.status_code} {body[:300]!r}")
        return elapsed, len(json.loads(body)), len(body)


PAGE_TOTAL = re.compile(r"\((more than )?(\d+) in all")
PAGE_COUNT_CAP = 1000  # portal/pagination.py CappedCountPaginator
PAGE_PASSWORD = "Bench-page-search-4187-quartz"  # noqa: S105 - a bench user on loopback


def page_user(tenant: Any) -> str:
    """A viewer of the tenant who logs in with a password (the page is a session's)."""
    from django_tenants.utils import schema_context

    from accounts.models import User
    from accounts.services import user_create

    with schema_context(tenant.schema_name):
        if not User.objects.filter(username="bench-viewer").exists():
            user_create(
                username="bench-viewer",
                email="viewer@bench.example",
                role="viewer",
                password=PAGE_PASSWORD,
            )
    return "bench-viewer"


def timed_row(samples: list[float], counts: list[int], sizes: list[int]) -> dict[str, Any]:
    """One row of the report: the timings, the result counts and the body size."""
    return {
        **summary(samples),
        "runs": len(samples),
        "results_min": min(counts),
        "results_median": statistics.median(counts),
        "results_max": max(counts),
        "body_kb_median": round(statistics.median(sizes) / 1024, 1),
    }


class PageTarget:
    """The tenant site's /studies/ search page, logged in as a viewer, asked what QIDO-RS is
    asked; its answer is the total it says it found ("(N in all)") or the rows it lists."""

    FIELDS = {"PatientName": "patient_name", "AccessionNumber": "accession_number"}

    def __init__(self, port: int, host: str, username: str) -> None:
        import requests

        self.base, self.host = f"http://127.0.0.1:{port}", host
        self.session = requests.Session()
        self.session.headers["Host"] = host
        # The cookies are Secure (production settings) and this is plain HTTP on loopback,
        # so they are carried by hand.
        login = self.session.get(f"{self.base}/account/login/", timeout=60)
        cookies = dict(login.cookies)
        # CSRF_USE_SESSIONS: the token is in the form, kept in the session the cookie names.
        found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)
        if found is None:
            raise RuntimeError(f"no CSRF token on the login page ({login.status_code})")
        csrf = found.group(1)
        answer = self.session.post(
            f"{self.base}/account/login/",
            data={"username": username, "password": PAGE_PASSWORD, "csrfmiddlewaretoken": csrf},
            headers={"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())},
            allow_redirects=False,
            timeout=60,
        )
        if answer.status_code != 302:
            raise RuntimeError(f"page login failed: {answer.status_code}")
        cookies.update(dict(answer.cookies))
        self.session.headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())

    def search(self, params: dict[str, str]) -> tuple[float, int, int]:
        query = {}
        for key, value in params.items():
            if key == "StudyDate":
                low, high = value.split("-")
                query["date_from"] = f"{low[:4]}-{low[4:6]}-{low[6:]}"
                query["date_to"] = f"{high[:4]}-{high[4:6]}-{high[6:]}"
            elif key in self.FIELDS:
                query[self.FIELDS[key]] = value
        started = time.perf_counter()
        response = self.session.get(f"{self.base}/studies/", params=query, timeout=120)
        body = response.text
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"page {params}: {response.status_code} {body[:300]!r}")
        total = PAGE_TOTAL.search(body)
        if total is None:
            count = body.count('<a href="/studies/1')
        else:
            count = int(total.group(2)) + (1 if total.group(1) else 0)
        return elapsed, count, len(body)


def run_page(
    target: PageTarget,
    plan: dict[str, list[dict[str, str]]],
    runs: int,
    warmup: int,
    expected: dict[str, int],
) -> dict[str, Any]:
    """The page's search for each kind of the QIDO plan; the totals must equal QIDO's."""
    results: dict[str, Any] = {"loadavg_before": load()}
    wrong: list[str] = []
    for kind, values in plan.items():
        samples, counts, sizes = [], [], []
        for n in range(warmup + runs):
            params = values[n % len(values)]
            elapsed, count, size = target.search(params)
            # Past the cap the page says "more than 1,000": that is the right answer there.
            want = min(expected[next(iter(params.values()))], PAGE_COUNT_CAP + 1)
            if count != want and len(wrong) < 10:
                wrong.append(f"{params}: {count} studies, expected {want}")
            if n >= warmup:
                samples.append(elapsed)
                counts.append(count)
                sizes.append(size)
        results[f"{kind}, page of 50"] = timed_row(samples, counts, sizes)
    results["loadavg_after"] = load()
    results["wrong_counts"] = wrong
    return results


def run_qido(
    target: Target,
    plan: dict[str, list[dict[str, str]]],
    runs: int,
    warmup: int,
    expected: dict[str, int],
    cap: int | None,
) -> dict[str, Any]:
    """Each kind with limit=101 (as OHIF asks) and without; `cap`: the server's maximum."""
    results: dict[str, Any] = {"loadavg_before": load()}
    wrong: list[str] = []
    for kind, values in plan.items():
        for limit in (101, None):
            label = f"{kind}, limit={limit}" if limit else f"{kind}, no limit"
            samples, counts, sizes = [], [], []
            for n in range(warmup + runs):
                params = dict(values[n % len(values)])
                if limit or target.no_limit:
                    params["limit"] = str(limit or target.no_limit)
                elapsed, count, size = target.search(params)
                matches = expected[next(iter(values[n % len(values)].values()))]
                sent = limit or (int(target.no_limit) if target.no_limit else None)
                want = min(x for x in (matches, sent, cap) if x is not None)
                if count != want and len(wrong) < 10:
                    wrong.append(f"{params}: {count} results, expected {want}")
                if n >= warmup:
                    samples.append(elapsed)
                    counts.append(count)
                    sizes.append(size)
            results[label] = timed_row(samples, counts, sizes)
    results["loadavg_after"] = load()
    results["wrong_counts"] = wrong
    return results


def explain_queries(tenant: Any, plan: dict[str, list[dict[str, str]]]) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the SQL the QIDO view runs for one value of each kind."""
    from django_tenants.utils import schema_context

    from studies.index.query import DEFAULT_RETURN, IndexQuery, Level

    found: dict[str, Any] = {}
    with schema_context(tenant.schema_name):
        for kind, values in plan.items():
            for limit in (101, 1000):
                query = IndexQuery(level=Level.STUDY)
                for key, value in values[0].items():
                    query.add_match(key, value)
                for keyword in DEFAULT_RETURN[Level.STUDY]:
                    query.add_return(keyword)
                rows = query.queryset().values(*query.columns())[: limit + 1]
                found[f"{kind} {values[0]} limit {limit}"] = {
                    "sql": str(rows.query),
                    "plan": rows.explain(analyze=True, buffers=True),
                }
    return found


# -- WADO-RS ----------------------------------------------------------------------------------


def write_ct_series(folder: Path, count: int, size: int) -> tuple[str, str, int]:
    """`count` CT instances of size x size in one series (as bench/ingest.py makes them)."""
    import numpy as np
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(4)
    base = (rng.integers(0, 1500, size=(size, size), dtype=np.uint16) + 24).astype(np.uint16)
    study_uid, series_uid = generate_uid(), generate_uid()
    total = 0
    for i in range(count):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"{i:06d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.PatientName, ds.PatientID = "Bench^Wado", "BENCH-WADO"
        ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
        ds.StudyDate = ds.SeriesDate = "20240101"
        ds.StudyTime = "120000"
        ds.AccessionNumber = "BENCHWADO"
        ds.StudyID, ds.StudyDescription = "1", "Bench WADO series"
        ds.SeriesDescription, ds.Modality, ds.SeriesNumber = "Bench WADO", "CT", 1
        ds.InstanceNumber = i + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelData = np.roll(base, i, axis=0).tobytes()
        ds.save_as(path, enforce_file_format=True)
        total += path.stat().st_size
    return study_uid, series_uid, total


def wado_series_in_tenant(tenant: Any, count: int) -> tuple[str, str, int] | None:
    """The bench WADO series already in a kept tenant, if complete."""
    from django_tenants.utils import schema_context

    from studies.models import Series

    with schema_context(tenant.schema_name):
        series = (
            Series.objects.filter(study__description="Bench WADO series", num_instances=count)
            .select_related("study")
            .first()
        )
        if series is None:
            return None
        return series.study.study_instance_uid, series.series_instance_uid, series.size_bytes


def ingest_files(tenant: Any, files: list[Path]) -> dict[str, Any]:
    from django_tenants.utils import schema_context

    from studies.ingest import ingest_item_stage, ingest_job_create, ingest_job_submit

    started = time.perf_counter()
    with schema_context(tenant.schema_name):
        job = ingest_job_create(source="folder", description="bench dicomweb WADO series")
        for path in files:
            with path.open("rb") as stream:
                ingest_item_stage(job=job, name=path.name, stream=stream)
        job = ingest_job_submit(job=job, run_now=True)
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "status": job.status,
        "stored": job.stored,
        "rejected": job.rejected,
    }


def retrieve(url: str, headers: dict[str, str]) -> dict[str, Any]:
    """GET a series as multipart/related, reading the stream fully; counts its parts."""
    import requests

    started = time.perf_counter()
    accept = {**headers, "Accept": DICOM_ACCEPT}
    with requests.get(url, headers=accept, stream=True, timeout=600) as response:
        first = None
        content_type = response.headers.get("Content-Type", "")
        if response.status_code != 200:
            raise RuntimeError(f"{url}: {response.status_code} {response.content[:300]!r}")
        match = re.search(r'boundary="?([^";]+)"?', content_type)
        marker = b"--" + match.group(1).encode() if match else None
        received, parts, tail = 0, 0, b""
        for chunk in response.raw.stream(1 << 20, decode_content=False):
            if first is None:
                first = time.perf_counter() - started
            received += len(chunk)
            if marker:
                window = tail + chunk
                parts += window.count(marker)
                tail = window[-(len(marker) - 1) :]
    elapsed = time.perf_counter() - started
    return {
        "seconds": elapsed,
        "first_byte_seconds": first,
        "bytes": received,
        "parts": max(0, parts - 1),  # the closing delimiter is not a part
        "content_type": content_type[:120],
    }


def run_wado(url: str, headers: dict[str, str], runs: int, payload: int) -> dict[str, Any]:
    retrieve(url, headers)  # warm the page cache and the server
    samples = [retrieve(url, headers) for _ in range(runs)]
    rates = [s["bytes"] / 1e6 / s["seconds"] for s in samples]
    return {
        "runs": runs,
        "payload_mb": round(payload / 1e6, 1),
        "body_mb": round(samples[0]["bytes"] / 1e6, 1),
        "parts": samples[0]["parts"],
        "content_type": samples[0]["content_type"],
        "seconds_median": round(statistics.median(s["seconds"] for s in samples), 2),
        "first_byte_ms_median": round(
            statistics.median(s["first_byte_seconds"] for s in samples) * 1000, 1
        ),
        "mb_per_s_median": round(statistics.median(rates), 1),
        "mb_per_s_min": round(min(rates), 1),
        "mb_per_s_max": round(max(rates), 1),
        "loadavg_after": load(),
    }


# -- Orthanc ----------------------------------------------------------------------------------


def bench_orthanc_config(home: Path, http_port: int, dicom_port: int) -> Path:
    return orthanc_config(
        home,
        http_port=http_port,
        dicom_port=dicom_port,
        # Only to load faster: no fsync per stored file (queries and reads are unaffected).
        SyncStorageArea=False,
        Plugins=[ORTHANC_DICOMWEB],
        DicomWeb={"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
    )


def orthanc_json(port: int, method: str, path: str, body: bytes | None = None) -> Any:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    connection.request(method, path, body=body)
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    if response.status != 200:
        raise RuntimeError(f"Orthanc {method} {path}: {response.status} {payload[:300]!r}")
    return json.loads(payload)


def small_instance(i: int, studies: int) -> bytes:
    """Study number i of the generator as one small DICOM instance (16x16 pixels)."""
    from io import BytesIO

    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    f = study_fields(i, studies, 1)
    sop = f"{UID_ROOT}.3.{i}.1.1"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = f["sop_class"]
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = f["sop_class"], sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = f["study_uid"], f"{UID_ROOT}.2.{i}.1"
    ds.PatientName, ds.PatientID = f["patient_name"], f["patient_id"]
    ds.PatientBirthDate, ds.PatientSex = f["birth_date"].strftime("%Y%m%d"), f["sex"]
    ds.StudyDate = ds.SeriesDate = f["study_date"].strftime("%Y%m%d")
    ds.StudyTime = f["study_time"]
    ds.AccessionNumber, ds.StudyID = f["accession"], f["study_id"]
    ds.StudyDescription, ds.ReferringPhysicianName = f["description"], f["referring"]
    ds.Modality, ds.SeriesNumber, ds.SeriesDescription = f["modality"], 1, "Series 1"
    ds.InstanceNumber = 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = bytes(range(256)) * 2
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def orthanc_load(port: int, limit: int, seconds: float, threads: int) -> dict[str, Any]:
    """POST studies 1, 2, ... until `limit` or the deadline; the stored set is 1..N."""
    numbers: queue.Queue[int] = queue.Queue()
    for i in range(1, limit + 1):
        numbers.put(i)
    deadline = time.monotonic() + seconds
    done: list[int] = []
    errors: list[BaseException] = []

    def send() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        try:
            while time.monotonic() < deadline and not errors:
                try:
                    i = numbers.get_nowait()
                except queue.Empty:
                    return
                connection.request("POST", "/instances", body=small_instance(i, limit))
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"POST /instances answered {response.status}")
                done.append(i)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    started = time.perf_counter()
    workers = [threading.Thread(target=send) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    stored = len(done)
    if sorted(done) != list(range(1, stored + 1)):
        raise RuntimeError("Orthanc's stored studies are not 1..N")
    return {"studies": stored, "seconds": round(elapsed, 1), "per_second": stored / elapsed}


def orthanc_post_files(port: int, files: list[Path]) -> float:
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    for path in files:
        connection.request("POST", "/instances", body=path.read_bytes())
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"POST /instances answered {response.status}")
    connection.close()
    return time.perf_counter() - started


# -- report -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    from django.db import connection

    cpu, ram_gib = cpu_and_memory()
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg = cursor.fetchone()[0]
        cursor.execute("SHOW shared_buffers")
        buffers = cursor.fetchone()[0]
    orthanc = ""
    if Path(ORTHANC).exists():
        done = subprocess.run([ORTHANC, "--version"], capture_output=True, text=True, check=False)
        orthanc = done.stdout.splitlines()[0] if done.stdout else ""
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": ram_gib,
        "postgresql": pg,
        "shared_buffers": buffers,
        "python": platform.python_version(),
        "orthanc": orthanc,
        "loadavg_at_start": load(),
    }


def print_report(results: dict[str, Any]) -> None:
    m = results["machine"]
    print(
        f"machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_gib']} GiB RAM, PostgreSQL "
        f"{m['postgresql']} (shared_buffers {m['shared_buffers']}), Python {m['python']}, "
        f"{m['orthanc']}, load at start {m['loadavg_at_start']}"
    )
    for name, info in results["indexes"].items():
        print(f"\nindex {name}: {info['label']} ({info['slug']}) {info['counts']}")
        if "generate_seconds" in info:
            print(f"  generated in {info['generate_seconds']} s: {info['generate_steps']}")
        if "consistency_errors" in info:
            print(f"  counter mismatches: {info['consistency_errors']}")
    if "orthanc_load" in results:
        print(f"\nOrthanc load: {results['orthanc_load']}")
    for target, rows in results["qido"].items():
        print(f"\nQIDO-RS {target}  (load {rows['loadavg_before']} -> {rows['loadavg_after']})")
        print(f"  {'query':<24} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8} {'results':>14} KB")
        for label, row in rows.items():
            if not isinstance(row, dict):
                continue
            count = f"{row['results_min']}-{row['results_max']}"
            print(
                f"  {label:<24} {row['p50']:8.1f} {row['p95']:8.1f} {row['mean']:8.1f} "
                f"{count:>14} {row['body_kb_median']}"
            )
        for wrong in rows.get("wrong_counts", []):
            print(f"  WRONG COUNT {wrong}")
    for target, row in results.get("wado", {}).items():
        print(f"\nWADO-RS {target}: {row}")
    for process, peaks in results.get("rss_mib", {}).items():
        print(f"\nRSS MiB {process}: {peaks}")
    for label, info in results.get("explain", {}).items():
        print(f"\nEXPLAIN {label}\n{info['sql']}\n{info['plan']}")
    for note in results.get("notes", []):
        print(f"\nnote: {note}")


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/dicomweb.py",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    parser.add_argument("--studies", type=int, default=100_000, help="Default: 100000.")
    parser.add_argument("--instances-per-study", type=int, default=10, help="Default: 10.")
    parser.add_argument("--runs", type=int, default=50, help="Timed runs per query (default 50).")
    parser.add_argument("--warmup", type=int, default=5, help="Untimed runs first (default 5).")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2).")
    parser.add_argument(
        "--orthanc", action="store_true", help="Also load and query Orthanc + DICOMweb."
    )
    parser.add_argument(
        "--orthanc-studies",
        type=int,
        default=100_000,
        help="At most this many one-instance studies into Orthanc, in as many seconds as "
        "--orthanc-load-seconds allows (default 100000, ~7 min here).",
    )
    parser.add_argument(
        "--orthanc-load-seconds",
        type=float,
        default=900,
        help="Stop loading Orthanc after this long (default 900).",
    )
    parser.add_argument(
        "--orthanc-threads", type=int, default=4, help="Concurrent POSTs (default 4)."
    )
    parser.add_argument(
        "--wado-instances", type=int, default=500, help="Series size (default 500)."
    )
    parser.add_argument(
        "--wado-size", type=int, default=512, help="Rows/columns of its CT (default 512)."
    )
    parser.add_argument("--wado-runs", type=int, default=5, help="Timed retrieves (default 5).")
    parser.add_argument("--no-wado", action="store_true", help="Skip WADO-RS.")
    parser.add_argument(
        "--no-explain", action="store_true", help="Skip EXPLAIN ANALYZE of the queries."
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="Keep (and reuse on the next --keep run) the bench tenants and Orthanc's data, "
        f"under {VAR.relative_to(ROOT)}.",
    )
    parser.add_argument(
        "--cleanup",
        action="store_true",
        help="Only delete and purge kept bench tenants and Orthanc's data, then exit.",
    )
    parser.add_argument("--json", action="store_true", help="Print the results as JSON.")
    args = parser.parse_args(argv)
    if min(args.studies, args.instances_per_study, args.runs, args.workers) < 1:
        parser.error("--studies, --instances-per-study, --runs and --workers must be >= 1")
    return args


def cleanup_kept() -> list[str]:
    from tenants.models import Tenant

    kept = list(Tenant.objects.filter(slug__startswith=TENANT_PREFIX, status="active"))
    purge_tenants(kept)
    shutil.rmtree(VAR / "orthanc", ignore_errors=True)
    return [t.slug for t in kept]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_django(VAR / "storage")

    import io

    from django.core.management import call_command

    call_command("migrate_portal", verbosity=0, stdout=io.StringIO())
    if args.cleanup:
        print(f"purged: {', '.join(cleanup_kept()) or 'nothing'}")
        return 0

    def say(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text} (load {load()})", file=sys.stderr)

    work = Path(tempfile.mkdtemp(prefix="pacs-bench-dicomweb-"))
    logs = work / "logs"
    logs.mkdir()
    created: list[Any] = []
    orthanc_home = VAR / "orthanc" if args.keep else work / "orthanc"
    results: dict[str, Any] = {
        "machine": machine(),
        "args": vars(args),
        "indexes": {},
        "qido": {},
        "notes": [],
    }
    targets: dict[str, tuple[Target, dict[str, list[dict[str, str]]], dict[str, int], Any]] = {}
    cap = 1000  # PORTAL_QIDO_MAX_RESULTS's default, which the server runs with
    failed = False
    try:
        with ExitStack() as stack:
            say(f"index {args.studies} x {args.instances_per_study}")
            big, info = indexed_tenant(args.studies, args.instances_per_study, args.keep, created)
            info["consistency_errors"] = consistency_errors(big)
            results["indexes"]["large"] = info
            say(f"index ready: {info['counts']}")

            small = orthanc_port = None
            if args.orthanc:
                # Kept data lives under VAR for the next --keep run; otherwise a temp dir.
                home = orthanc_home
                home.mkdir(parents=True, exist_ok=True)
                orthanc_port, dicom_port = free_port(), free_port()
                config = bench_orthanc_config(home, orthanc_port, dicom_port)
                orthanc = stack.enter_context(
                    service([ORTHANC, str(config)], logs / "orthanc.log", orthanc_port)
                )
                marker = home / "loaded.json"
                if marker.exists():
                    results["orthanc_load"] = {**json.loads(marker.read_text()), "reused": True}
                else:
                    say("loading Orthanc")
                    results["orthanc_load"] = orthanc_load(
                        orthanc_port,
                        args.orthanc_studies,
                        args.orthanc_load_seconds,
                        args.orthanc_threads,
                    )
                    results["orthanc_load"]["loadavg_after"] = load()
                    marker.write_text(json.dumps(results["orthanc_load"]))
                n_small = results["orthanc_load"]["studies"]
                say(f"Orthanc holds {n_small} studies; portal tenant of the same size")
                small, info = indexed_tenant(n_small, 1, args.keep, created)
                results["indexes"]["small"] = info
                stats = orthanc_json(orthanc_port, "GET", "/statistics")
                results["orthanc_load"]["statistics"] = stats

            wado = None
            if not args.no_wado:
                found = wado_series_in_tenant(big, args.wado_instances) if args.keep else None
                folder = work / "wado"
                orthanc_has = (orthanc_home / "wado.json").exists() and args.orthanc
                if found is None or (args.orthanc and not orthanc_has):
                    say(f"writing {args.wado_instances} CT files for WADO-RS")
                    written = write_ct_series(folder, args.wado_instances, args.wado_size)
                if found is None:
                    files = sorted(folder.iterdir())
                    say("ingesting them through the pipeline")
                    results["wado_ingest"] = ingest_files(big, files)
                    found = wado_series_in_tenant(big, args.wado_instances)
                    if found is None:
                        raise RuntimeError(f"WADO series not indexed: {results['wado_ingest']}")
                wado = {"portal": found}
                if args.orthanc:
                    kept = orthanc_home / "wado.json"
                    if kept.exists():
                        wado["orthanc"] = tuple(json.loads(kept.read_text()))
                    else:
                        files = sorted(folder.iterdir())
                        say("posting them to Orthanc")
                        seconds = orthanc_post_files(orthanc_port, files)
                        results["orthanc_wado_load_seconds"] = round(seconds, 1)
                        wado["orthanc"] = written
                        kept.write_text(json.dumps(written))
                shutil.rmtree(folder, ignore_errors=True)

            port = free_port()
            gunicorn = [sys.executable, "-m", "gunicorn", "portal.wsgi", "-w", str(args.workers)]
            gunicorn += ["-b", f"127.0.0.1:{port}"]
            server_env = {
                "DEBUG": "false",
                "SECRET_KEY": secrets.token_urlsafe(48),
                "ALLOWED_HOSTS": "localhost,.localhost,127.0.0.1",
                "SECURE_SSL_REDIRECT": "false",  # plain HTTP on loopback, no TLS proxy
                "LOG_LEVEL": "WARNING",
            }
            web = stack.enter_context(
                service(gunicorn, logs / "gunicorn.log", port, env=server_env)
            )

            def portal(tenant: Any) -> Target:
                headers = {
                    "Host": f"{tenant.slug}.localhost",
                    "Authorization": f"Bearer {read_token(tenant)}",
                }
                return Target("portal", f"http://127.0.0.1:{port}/dicom-web", headers)

            large = f"portal {args.studies}x{args.instances_per_study}"
            plan = query_plan(args.studies, args.runs)
            targets[large] = (portal(big), plan, expected_matches(args.studies, plan), cap)
            if small is not None:
                n_small = results["indexes"]["small"]["counts"]["studies"]
                plan = query_plan(n_small, args.runs)
                expected = expected_matches(n_small, plan)
                targets[f"portal {n_small}x1"] = (portal(small), plan, expected, cap)
                # Orthanc has no maximum: its "no limit" rows ask for the portal's 1000.
                orthanc_target = Target(
                    "orthanc", f"http://127.0.0.1:{orthanc_port}/dicom-web", {}, no_limit="1000"
                )
                targets[f"orthanc {n_small}x1"] = (orthanc_target, plan, expected, None)
            for label, (target, plan, expected, limit) in targets.items():
                say(f"QIDO-RS {label}")
                results["qido"][label] = run_qido(
                    target, plan, args.runs, args.warmup, expected, limit
                )
            # The tenant site's search page, asked the same on the large index.
            say(f"search page {large}")
            page = PageTarget(port, f"{big.slug}.localhost", page_user(big))
            plan, expected = targets[large][1], targets[large][2]
            results["qido"][f"search page, {large}"] = run_page(
                page, plan, args.runs, args.warmup, expected
            )
            results["rss_mib"] = {"gunicorn after QIDO": rss_mib(web.pid)}

            if wado is not None:
                results["wado"] = {}
                study_uid, series_uid, payload = wado["portal"]
                target = targets[large][0]
                url = f"{target.base}/studies/{study_uid}/series/{series_uid}"
                say("WADO-RS portal")
                results["wado"]["portal"] = run_wado(
                    url, dict(target.session.headers), args.wado_runs, payload
                )
                results["rss_mib"]["gunicorn after WADO"] = rss_mib(web.pid)
                if "orthanc" in wado:
                    study_uid, series_uid, payload = wado["orthanc"]
                    url = f"http://127.0.0.1:{orthanc_port}/dicom-web/studies/{study_uid}"
                    url += f"/series/{series_uid}"
                    say("WADO-RS Orthanc")
                    results["wado"]["orthanc"] = run_wado(url, {}, args.wado_runs, payload)
            if args.orthanc:
                results["rss_mib"]["orthanc"] = rss_mib(orthanc.pid)
            if not args.no_explain:
                say("EXPLAIN ANALYZE")
                results["explain"] = explain_queries(big, targets[large][1])
            results["machine"]["loadavg_at_end"] = load()
    except BaseException:
        failed = True
        kept = ", ".join(t.slug for t in created) or "none"
        print(f"failed; logs kept in {logs}, bench tenants kept: {kept}", file=sys.stderr)
        raise
    finally:
        if not args.keep and not failed:
            purge_tenants(created)
        elif created or args.keep:
            results["kept"] = {"tenants": [t.slug for t in created], "var": str(VAR)}
        if not failed:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        json.dump(results, sys.stdout, indent=2, default=str)
        print()
    else:
        print_report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
