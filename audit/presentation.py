"""Audit rows for people: the object by its name, with a link, and the details as pairs.

The log keeps (object_type, object_id) as written; the names are read at display time, one
query per kind of object on the page, so a renamed object shows its current name and a
deleted one says so. Types without a page here are shown as written.
"""

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.urls import NoReverseMatch, reverse


@dataclass(frozen=True)
class Kind:
    model: str  # "app_label.Model"
    label: Callable[[Any], str]
    url: Callable[[Any], str] | None = None
    related: tuple[str, ...] = ()
    by: str = "pk"


def _instance_url(row: Any) -> str:
    series = row.series
    return reverse(
        "instance_detail",
        args=[series.study.study_instance_uid, series.series_instance_uid, row.sop_instance_uid],
    )


KINDS: dict[str, Kind] = {
    "user": Kind(
        "accounts.User", lambda r: r.username, lambda r: reverse("user_detail", args=[r.pk])
    ),
    "apitoken": Kind("accounts.ApiToken", lambda r: f"token “{r.name}”"),
    "storagemedium": Kind(
        "studies.StorageMedium",
        lambda r: f"medium “{r.name}”",
        lambda r: reverse("medium_detail", args=[r.pk]),
    ),
    "remotenode": Kind(
        "configuration.RemoteNode",
        lambda r: f"node {r.ae_title}@{r.host}:{r.port}",
        lambda r: reverse("settings_node_edit", args=[r.pk]),
    ),
    "retentionrule": Kind("configuration.RetentionRule", lambda r: f"retention rule “{r}”"),
    "study": Kind(
        "studies.Study",
        lambda r: (
            f"study of {r.patient_name or '(no name)'}"
            + (f", {r.study_date:%Y-%m-%d}" if r.study_date else "")
        ),
        lambda r: reverse("study_detail", args=[r.study_instance_uid]),
    ),
    "instance": Kind(
        "studies.Instance",
        lambda r: (
            f"instance {r.instance_number or ''} of {r.series.study.patient_name or 'a study'}"
        ),
        _instance_url,
        related=("series__study",),
    ),
    "ingestjob": Kind(
        "studies.IngestJob",
        lambda r: f"ingest job #{r.pk}",
        lambda r: reverse("ingest_job", args=[r.pk]),
    ),
    "sendjob": Kind(
        "studies.SendJob",
        lambda r: f"send #{r.pk} to {r.destination}",
        lambda r: reverse("send_job", args=[r.pk]),
    ),
    "retrievejob": Kind(
        "studies.RetrieveJob",
        lambda r: f"retrieval #{r.pk} from {r.source}",
        lambda r: reverse("retrieve_job", args=[r.pk]),
    ),
}


def audit_present(events: Iterable[Any]) -> None:
    """Set `object_label`, `object_url` and `detail_pairs` on each event of a page."""
    events = list(events)
    wanted: dict[str, set[int]] = defaultdict(set)
    for event in events:
        if event.object_type in KINDS and str(event.object_id).isdigit():
            wanted[event.object_type].add(int(event.object_id))
    found: dict[tuple[str, int], Any] = {}
    for kind_name, ids in wanted.items():
        kind = KINDS[kind_name]
        rows = apps.get_model(kind.model).objects.filter(pk__in=ids)
        if kind.related:
            rows = rows.select_related(*kind.related)
        found.update({(kind_name, row.pk): row for row in rows})
    for event in events:
        event.object_label, event.object_url = _object(event, found)
        event.detail_pairs = detail_pairs(event.details)


def _object(event: Any, found: dict[tuple[str, int], Any]) -> tuple[str, str]:
    if not event.object_type:
        return "", ""
    written = f"{event.object_type} {event.object_id}".strip()
    kind = KINDS.get(event.object_type)
    if kind is None or not str(event.object_id).isdigit():
        return written, ""
    row = found.get((event.object_type, int(event.object_id)))
    if row is None:
        return f"{written} (no longer exists)", ""
    try:
        url = kind.url(row) if kind.url else ""
    except NoReverseMatch:  # a page of another site (the super-admin's)
        url = ""
    return kind.label(row), url


def detail_pairs(details: Any) -> list[tuple[str, str]]:
    """Top-level keys with readable values: text as is, anything nested as compact JSON."""
    if not isinstance(details, dict):
        return [("", json.dumps(details, default=str))] if details else []
    pairs = []
    for key, value in details.items():
        if isinstance(value, (dict, list)):
            text = json.dumps(value, default=str, ensure_ascii=False, separators=(", ", ": "))
        else:
            text = str(value)
        pairs.append((str(key), text if len(text) <= 300 else text[:299] + "…"))
    return pairs
