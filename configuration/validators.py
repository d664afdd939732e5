"""Validation of what admins type into the tenant's configuration."""

import ipaddress
import re
import string
import zoneinfo
from functools import cache

from django.core.exceptions import ValidationError

_COLOUR_RE = re.compile(r"#[0-9a-fA-F]{6}")
_HOST_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_ORIGIN_RE = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<host>\[[0-9A-Fa-f:.]+\]|[^/?#:@\[\]\s]+)"
    r"(?::(?P<port>[0-9]{1,5}))?(?P<rest>[/?#].*)?",
    re.DOTALL,
)
# DICOM code string (VR CS) as used for Modality (0008,0060): uppercase, digits, underscore.
_MODALITY_RE = re.compile(r"[A-Z0-9_]{2,16}")
ALL_MODALITIES = "*"
MAX_CORS_ORIGINS = 50


@cache
def available_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def validate_accent_colour(value: str) -> None:
    if not _COLOUR_RE.fullmatch(value or ""):
        raise ValidationError("Enter a colour as #rrggbb, e.g. #1f6feb.", code="invalid")


def validate_timezone(value: str) -> None:
    if value not in available_timezones():
        raise ValidationError(
            "“%(value)s” is not a known time zone; use a name such as Europe/Berlin.",
            code="invalid",
            params={"value": value},
        )


def _is_host_name(value: str) -> bool:
    labels = value.split(".")
    return len(value) <= 253 and all(_HOST_LABEL_RE.fullmatch(label) for label in labels)


def _is_ip_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def validate_node_host(value: str) -> None:
    """A remote DICOM node's host: an IPv4/IPv6 address or a (lowercase) host name."""
    if _is_ip_address(value) or (_is_host_name(value) and not value.replace(".", "").isdigit()):
        return
    raise ValidationError(
        "Enter an IP address or a host name such as ct1.radiology.example (lowercase letters, "
        "digits, hyphens and dots).",
        code="invalid",
    )


def certificate_fingerprint(value: str) -> str:
    """A SHA-256 certificate fingerprint as written anywhere (openssl's `AB:CD:…`, spaces,
    either case) in the one form the gateway compares: 64 lowercase hex digits."""
    return "".join(value.split()).replace(":", "").lower()


def validate_certificate_fingerprint(value: str) -> None:
    """Empty, or the SHA-256 fingerprint of a client certificate (64 hex digits)."""
    if value and not re.fullmatch(r"[0-9a-f]{64}", certificate_fingerprint(value)):
        raise ValidationError(
            "Enter the certificate's SHA-256 fingerprint: 64 hexadecimal digits, with or "
            "without colons (openssl x509 -noout -fingerprint -sha256 -in node.pem).",
            code="invalid",
        )


def validate_cors_origin(value: str) -> None:
    """One browser origin, `scheme://host[:port]`, written as browsers send it."""
    example = "Enter an origin such as https://viewer.example.org or http://localhost:3000"
    if "*" in value:
        raise ValidationError(
            f"Wildcards are not allowed: list each viewer's origin. {example}.", code="wildcard"
        )
    match = _ORIGIN_RE.fullmatch(value)
    if match is None:
        raise ValidationError(f"{example}.", code="invalid")
    if match["scheme"].lower() not in {"http", "https"}:
        raise ValidationError(f"Only http and https origins are allowed. {example}.", code="scheme")
    if match["rest"]:
        raise ValidationError(
            f"An origin has no path, not even a trailing slash. {example}.", code="path"
        )
    host = match["host"]
    valid_host = (
        _is_ip_address(host[1:-1]) and ":" in host
        if host.startswith("[")
        else _is_ip_address(host) or _is_host_name(host.lower())
    )
    port = int(match["port"]) if match["port"] else None
    if not valid_host or port == 0 or (port is not None and port > 65535):
        raise ValidationError(f"{example} (a host name or IP address, optional port).")
    if value != value.lower():
        raise ValidationError("Write the origin in lowercase, as browsers send it.", "case")


def validate_cors_origins(value: object) -> None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValidationError("CORS origins are a list of origins.", code="invalid")
    if len(value) > MAX_CORS_ORIGINS:
        raise ValidationError(f"List at most {MAX_CORS_ORIGINS} origins.", code="too_many")
    errors: list[str] = []
    for origin in value:
        try:
            validate_cors_origin(origin)
        except ValidationError as exc:
            errors.extend(f"{origin}: {message}" for message in exc.messages)
    if len(set(value)) != len(value):
        errors.append("Each origin may be listed once.")
    if errors:
        raise ValidationError(errors)


def validate_modality(value: str) -> None:
    """A DICOM modality code (CT, MR, US, RTSTRUCT…) or `*` for every modality."""
    if value == ALL_MODALITIES:
        return
    if value.upper() != value:
        raise ValidationError(
            "Modality codes are uppercase, e.g. %(upper)s.",
            code="lowercase",
            params={"upper": value.upper()},
        )
    if not _MODALITY_RE.fullmatch(value):
        raise ValidationError(
            "Enter a DICOM modality code of 2-16 letters, digits or underscores (CT, MR, US, "
            "CR, DX, MG, PT, NM, XA, OT…) or * for all modalities.",
            code="invalid",
        )


VIEWER_PLACEHOLDERS = frozenset({"study_uid", "series_uid"})


def validate_viewer_url_template(value: str) -> None:
    """Another viewer's launch URL: http(s), with {study_uid} and at most {series_uid} in it."""
    if not value:
        return
    example = "e.g. https://viewer.example.org/viewer?StudyInstanceUIDs={study_uid}"
    match = _ORIGIN_RE.fullmatch(value)
    if (
        match is None
        or match["scheme"].lower() not in {"http", "https"}
        or any(c.isspace() for c in value)
    ):
        raise ValidationError(
            f"Enter an http or https URL without spaces, {example}.", code="invalid"
        )
    try:
        parts = [(name, spec or conv) for _, name, spec, conv in string.Formatter().parse(value)]
    except ValueError:
        raise ValidationError(
            "Braces must enclose {study_uid} or {series_uid}; write a literal brace twice.",
            code="braces",
        ) from None
    fields = {name for name, _ in parts if name is not None}
    unknown = sorted(fields - VIEWER_PLACEHOLDERS)
    if unknown or any(extra for name, extra in parts if name is not None):
        raise ValidationError(
            "Only {study_uid} and {series_uid} can be filled in; %(names)s cannot.",
            code="placeholder",
            params={"names": ", ".join(f"{{{n}}}" for n in unknown) or "a format or conversion"},
        )
    if "study_uid" not in fields:
        raise ValidationError(f"The URL must contain {{study_uid}}, {example}.", code="study")
