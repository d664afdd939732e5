"""Validation of the names people type for tenants: slugs and AE titles."""

import re

from django.core.exceptions import ValidationError

SLUG_PATTERN = r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?"
SLUG_RE = re.compile(rf"^{SLUG_PATTERN}$")

# Names that would collide with the product's own hosts, paths or schemas.
RESERVED_SLUGS = frozenset(
    {
        "public",
        "www",
        # First path segments of the platform site, which path-mode proxies send there.
        "account",
        "tenants",
        "admin",
        "api",
        "t",
        "static",
        "media",
        "dicom-web",
        "dicomweb",
        "health",
        "metrics",
        "login",
        "logout",
        "mail",
        "smtp",
        "ftp",
        "localhost",
        "pg-catalog",
        "information-schema",
        "template",
        "tenant-template",
        "root",
        "superadmin",
        "super-admin",
        "portal",
        "pacs",
        "ns",
        "ns1",
        "ns2",
    }
)


def validate_slug(value: str) -> None:
    """A tenant slug is a lowercase DNS label of 1-32 characters that nobody else uses."""
    if value != value.strip() or not value:
        raise ValidationError("Enter a slug without spaces.", code="invalid")
    if value.lower() != value:
        raise ValidationError(
            "Use lowercase letters only (the slug is part of a host name).", code="uppercase"
        )
    if len(value) > 32:
        raise ValidationError("Use at most 32 characters.", code="too_long")
    if not SLUG_RE.match(value):
        raise ValidationError(
            "Use lowercase letters, digits and hyphens, starting and ending with a letter "
            "or digit (a DNS label).",
            code="invalid",
        )
    if "--" in value:
        raise ValidationError("Do not use two hyphens in a row.", code="invalid")
    if value in RESERVED_SLUGS:
        raise ValidationError(
            f"“{value}” is reserved by the portal; choose another slug.", code="reserved"
        )


def validate_ae_title(value: str) -> None:
    """DICOM AE title (PS3.5 VR AE): 1-16 characters, no backslash or control characters."""
    if not value or not value.strip():
        raise ValidationError("An AE title cannot be empty or all spaces.", code="blank")
    if len(value) > 16:
        raise ValidationError("An AE title has at most 16 characters.", code="too_long")
    if "\\" in value or any(ord(ch) < 32 or ord(ch) > 126 for ch in value):
        raise ValidationError(
            "An AE title may not contain backslashes, control or non-ASCII characters.",
            code="invalid",
        )


_HOST_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def validate_custom_domain(value: str) -> None:
    """A fully qualified host name outside the base domain (whose labels belong to slugs)."""
    from django.conf import settings

    labels = value.split(".")
    if len(value) > 253 or len(labels) < 2 or not all(_HOST_LABEL_RE.match(x) for x in labels):
        raise ValidationError("Enter a host name such as pacs.hospital.example.", code="invalid")
    base = settings.PORTAL_BASE_DOMAIN
    if value == base or value.endswith("." + base):
        raise ValidationError(
            f"Names under {base} are reserved for tenant slugs; add a host of your own domain.",
            code="reserved",
        )


def schema_name_for(slug: str) -> str:
    """The PostgreSQL schema of a tenant, derived from its slug and never typed by a user."""
    return "t_" + slug.replace("-", "_")
