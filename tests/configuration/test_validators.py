"""Each validation rule of the configuration, on its own (no database)."""

import pytest
from django.core.exceptions import ValidationError

from configuration.validators import (
    validate_accent_colour,
    validate_cors_origin,
    validate_cors_origins,
    validate_modality,
    validate_node_host,
    validate_timezone,
)


def message(validator, value) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError) as caught:
        validator(value)
    return " ".join(caught.value.messages)


@pytest.mark.parametrize(
    "origin",
    [
        "https://viewer.example.org",
        "http://localhost:3000",
        "https://10.1.2.3:8443",
        "http://[::1]:3000",
        "https://ohif",
    ],
)
def test_origins_as_browsers_send_them_are_accepted(origin):
    validate_cors_origin(origin)


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        ("*", "Wildcards are not allowed"),
        ("https://*.example.org", "Wildcards are not allowed"),
        ("https://viewer.example.org/", "no path, not even a trailing slash"),
        ("https://viewer.example.org/ohif", "no path"),
        ("https://viewer.example.org?x=1", "no path"),
        ("ftp://viewer.example.org", "Only http and https"),
        ("viewer.example.org", "Enter an origin such as"),
        ("https://user@viewer.example.org", "Enter an origin such as"),
        ("https://viewer.example.org:0", "optional port"),
        ("https://viewer.example.org:70000", "optional port"),
        ("https://bad_host.example", "optional port"),
        ("https://Viewer.Example.org", "lowercase"),
        (" https://viewer.example.org", "Enter an origin such as"),
    ],
)
def test_bad_origins_are_refused_with_the_reason(origin, expected):
    assert expected in message(validate_cors_origin, origin)


def test_origin_lists_are_checked_item_by_item_and_for_repeats():
    text = message(validate_cors_origins, ["https://a.example", "https://a.example", "*"])
    assert "Each origin may be listed once." in text
    assert "*: Wildcards are not allowed" in text
    assert "at most 50" in message(
        validate_cors_origins, [f"https://h{i}.example" for i in range(51)]
    )


@pytest.mark.parametrize("colour", ["#1f6feb", "#ABCDEF", "#000000"])
def test_accent_colours_in_hex_are_accepted(colour):
    validate_accent_colour(colour)


@pytest.mark.parametrize("colour", ["1f6feb", "#fff", "#12345g", "red", "#1f6feb\n", ""])
def test_other_colour_spellings_are_refused(colour):
    assert "#rrggbb" in message(validate_accent_colour, colour)


def test_time_zones_come_from_the_tz_database():
    validate_timezone("Europe/Berlin")
    validate_timezone("UTC")
    assert "not a known time zone" in message(validate_timezone, "Mars/Olympus_Mons")
    assert "not a known time zone" in message(validate_timezone, "europe/berlin")


@pytest.mark.parametrize("host", ["10.0.0.5", "::1", "ct1", "pacs.radiology.example", "fe80::1"])
def test_node_hosts_are_addresses_or_host_names(host):
    validate_node_host(host)


@pytest.mark.parametrize(
    "host", ["", "999.1.1.1", "-ct1", "ct_1.example", "ct 1", "a" * 64 + ".example", "h/ost"]
)
def test_other_node_hosts_are_refused(host):
    assert "IP address or a host name" in message(validate_node_host, host)


@pytest.mark.parametrize("code", ["CT", "MR", "RTSTRUCT", "OT", "*", "SR_X"])
def test_modality_codes_and_the_wildcard_are_accepted(code):
    validate_modality(code)


def test_bad_modality_codes_are_refused():
    assert "uppercase, e.g. CT" in message(validate_modality, "ct")
    for code in ("C", "C-T", "ABCDEFGHIJKLMNOPQ", "**", "CT\n"):
        assert "DICOM modality code of 2-16" in message(validate_modality, code)
