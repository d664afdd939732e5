"""QIDO-RS (PS3.18 10.6): search for studies, series and instances, answered from the index.

Query keys are attribute keywords or tags (`PatientName=DOE*`, `00100020=123`) matched as
`studies.index.query` does it (the rules C-FIND uses too), plus `includefield` (a list, or
`all`), `limit`, `offset` and `fuzzymatching` (declined with a warning: only literal and
wildcard matching is done). A key the index cannot match is a 400 that names it, rather
than a silently wider answer; an attribute it cannot return is left out with a warning.
No file is opened to answer a search.
"""

import json
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from studies.dicomweb.access import (
    DICOM_JSON,
    RETRIEVE_URL,
    DicomWebError,
    DicomWebView,
    accepts_dicom_json,
    checked_uid,
    warning,
)
from studies.index.query import (
    BY_KEYWORD,
    DEFAULT_RETURN,
    IndexQuery,
    Level,
    QueryError,
    attribute_named,
    dicom_json,
    match_condition,
)

PARAMETERS = {"includefield", "limit", "offset", "fuzzymatching", "accept"}
MAX_OFFSET = 2**31 - 1
# Stand-ins for the UIDs in a reversed URL; `~` is in no UID, host name or tenant slug.
URL_PLACEHOLDERS = {
    "StudyInstanceUID": "~study~",
    "SeriesInstanceUID": "~series~",
    "SOPInstanceUID": "~instance~",
}
# Elements every answer carries whatever was asked (PS3.18 Tables 10.6.3-3 to -5).
SPECIFIC_CHARACTER_SET = {"00080005": {"vr": "CS", "Value": ["ISO_IR 192"]}}
INSTANCE_AVAILABILITY = {"00080056": {"vr": "CS", "Value": ["ONLINE"]}}


def max_results() -> int:
    return int(settings.PORTAL_QIDO_MAX_RESULTS)


def _integer(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise DicomWebError(400, f"{name} must be a whole number, not {raw[:40]!r}.") from None
    if value < 0:
        raise DicomWebError(400, f"{name} must not be negative.")
    return value


class SearchView(DicomWebView):
    """One search resource; `level` says what it finds, the URL may name a study or series."""

    level: Level
    audit_action = "dicomweb.search"

    def get(self, request: HttpRequest, study: str | None = None, series: str | None = None):
        if not accepts_dicom_json(request):
            raise DicomWebError(406, "Search results are available as application/dicom+json only.")
        query = IndexQuery(level=self.level)
        if study is not None:
            query.study_instance_uid = checked_uid(study, "Study Instance UID")
        if series is not None:
            query.series_instance_uid = checked_uid(series, "Series Instance UID")
        warnings, offset, limit = self._read_parameters(request, query)
        rows = list(query.rows(offset=offset, limit=limit + 1))
        if len(rows) > limit:
            rows = rows[:limit]
            if limit == max_results():
                warnings.append(
                    "The number of results exceeded the maximum supported by the server "
                    f"({limit}). Additional results can be requested with offset."
                )
        url = self._retrieve_url_template(request)
        answer = [self._result(query, row, url) for row in rows]
        self.audit(
            object_type=self.level.name.lower(),
            object_id=series or study or "",
            details={"level": self.level.value, "results": len(answer)},
        )
        response = HttpResponse(json.dumps(answer, separators=(",", ":")), content_type=DICOM_JSON)
        if warnings:
            response["Warning"] = ", ".join(warning(text) for text in warnings)
        return response

    def _read_parameters(
        self, request: HttpRequest, query: IndexQuery
    ) -> tuple[list[str], int, int]:
        warnings: list[str] = []
        offset, limit = 0, max_results()
        for key, values in request.GET.lists():
            if key == "includefield":
                self._include(query, [v for value in values for v in value.split(",")])
                continue
            if len(values) > 1:
                raise DicomWebError(400, f"The query parameter {key} is given more than once.")
            value = values[0]
            if key == "limit":
                asked = _integer("limit", value)
                if asked > limit:
                    warnings.append(
                        f"limit={asked} is over the server's maximum of {limit}; "
                        f"{limit} results at most are returned."
                    )
                limit = min(asked, limit)
            elif key == "offset":
                offset = _integer("offset", value)
                if offset > MAX_OFFSET:
                    raise DicomWebError(400, f"offset must be at most {MAX_OFFSET}.")
            elif key == "accept":
                continue  # read before the search
            elif key == "fuzzymatching":
                if value not in {"true", "false"}:
                    raise DicomWebError(400, "fuzzymatching must be true or false.")
                if value == "true":
                    warnings.append(
                        "The fuzzymatching parameter is not supported. "
                        "Only literal matching has been performed."
                    )
            else:
                self._match(query, key, value)
        for keyword in self._default_returns(query):
            query.add_return(keyword)
        if query.unsupported:
            warnings.append(
                "These attributes are not held by the index and are not returned: "
                + ", ".join(query.unsupported)
            )
        return warnings, offset, limit

    def _match(self, query: IndexQuery, key: str, value: str) -> None:
        if "." in key:
            raise DicomWebError(400, f"Sequence matching ({key}) is not supported.")
        try:
            attribute = attribute_named(key)
        except QueryError:
            raise DicomWebError(
                400,
                f"Unknown query parameter {key!r}: neither a DICOM attribute nor one of "
                f"{', '.join(sorted(PARAMETERS))}.",
            ) from None
        if attribute is None or self.level not in attribute.columns:
            raise DicomWebError(
                400,
                f"{attribute.keyword if attribute else key} cannot be searched at the "
                f"{self.level.name.lower()} level here.",
            )
        try:
            if value:  # checked now, so a bad date is a 400 that names its parameter
                match_condition(attribute, value, self.level)
            query.add_match(attribute.keyword, value)
        except QueryError as error:
            raise DicomWebError(400, f"{attribute.keyword}: {error}") from None

    def _include(self, query: IndexQuery, names: list[str]) -> None:
        for name in (n.strip() for n in names):
            if not name:
                continue
            if name == "all":
                query.add_all_returns()
                continue
            try:
                query.add_return(name)
            except QueryError as error:
                raise DicomWebError(400, f"includefield: {error}") from None

    def _default_returns(self, query: IndexQuery) -> list[str]:
        """The level's attributes, and those of the levels above it the URL leaves open."""
        keywords = list(DEFAULT_RETURN[self.level])
        if self.level == Level.INSTANCE and query.series_instance_uid is None:
            keywords += DEFAULT_RETURN[Level.SERIES]
        if self.level != Level.STUDY and query.study_instance_uid is None:
            keywords += DEFAULT_RETURN[Level.STUDY]
        return keywords

    def _result(self, query: IndexQuery, row: dict[str, Any], url: str) -> dict:
        result = dicom_json(query, row)
        result.update(SPECIFIC_CHARACTER_SET)
        if self.level in {Level.STUDY, Level.INSTANCE}:
            result.update(INSTANCE_AVAILABILITY)
        for keyword, placeholder in URL_PLACEHOLDERS.items():
            if placeholder in url:
                url = url.replace(placeholder, str(row[BY_KEYWORD[keyword].columns[self.level]]))
        result[RETRIEVE_URL] = {"vr": "UR", "Value": [url]}
        return dict(sorted(result.items()))

    def _retrieve_url_template(self, request: HttpRequest) -> str:
        """The absolute RetrieveURL of this level with placeholders for the UIDs: reversed
        once per search rather than once per result."""
        study, series, instance = URL_PLACEHOLDERS.values()
        kwargs, name = {"study": study}, "dicomweb_study"
        if self.level in {Level.SERIES, Level.INSTANCE}:
            kwargs["series"], name = series, "dicomweb_series"
        if self.level == Level.INSTANCE:
            kwargs["instance"], name = instance, "dicomweb_instance"
        return request.build_absolute_uri(reverse(name, kwargs=kwargs))


class StudySearchView(SearchView):
    level = Level.STUDY


class SeriesSearchView(SearchView):
    level = Level.SERIES


class InstanceSearchView(SearchView):
    level = Level.INSTANCE
