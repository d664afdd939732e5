"""Which addresses the archive may open DICOM connections to (C-ECHO, C-MOVE destinations).

A tenant admin chooses a remote node's host; without a rule, the web and gateway processes
would connect wherever it points (the database, Redis, the cloud metadata address) and the
answers would map the platform's internal network. Only globally routable addresses are
allowed, plus the networks the platform lists in `PORTAL_DICOM_ALLOWED_NETWORKS` (a hospital
LAN is private, so on-premises deployments list theirs). A name is resolved once; the
connection goes to the checked address, so the name cannot point elsewhere in between.
"""

import ipaddress
import socket
from functools import cache

from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# One message for every address the policy refuses, open port or not: the answer tells an
# admin what to do, and nothing about what listens there.
REFUSED = (
    "The archive does not connect to {host}: it is a loopback, private, link-local or "
    "otherwise internal address. If this node is on the hospital network, the platform "
    "administrator lists that network in PORTAL_DICOM_ALLOWED_NETWORKS."
)


class AddressRefused(Exception):
    """The host is, or resolves to, an address outside the egress policy."""

    def __init__(self, host: str) -> None:
        super().__init__(REFUSED.format(host=host))


def allowed_networks() -> tuple[IPNetwork, ...]:
    return _parse(tuple(settings.PORTAL_DICOM_ALLOWED_NETWORKS))


@cache
def _parse(networks: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(net.strip(), strict=False) for net in networks if net.strip())


def _ip(address: str) -> IPAddress:
    ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return ip


def publicly_routable(address: str) -> bool:
    """A global unicast address: not loopback, private, link-local (cloud metadata) or
    reserved, whatever PORTAL_DICOM_ALLOWED_NETWORKS says."""
    ip = _ip(address)
    return ip.is_global and not ip.is_multicast


def address_allowed(address: str) -> bool:
    """Whether the policy lets the archive connect to this IP address (DICOM peers)."""
    if any(_ip(address) in network for network in allowed_networks()):
        return True
    return publicly_routable(address)


def resolve(host: str, port: int) -> str:
    """The one address to connect to for host:port (IPv4 first, as pynetdicom would choose),
    checked against the policy. OSError if the name does not resolve; AddressRefused if the
    address is not allowed."""
    entries = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    entries.sort(key=lambda entry: entry[0] != socket.AF_INET)
    address = str(entries[0][4][0])
    if not address_allowed(address):
        raise AddressRefused(host)
    return address


def check_host(host: str) -> None:
    """At save time: refuse a host that is, or resolves now to, a refused address. A name
    that does not resolve yet is accepted; the check runs again before every connection."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:
            entries = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return
        addresses = {str(entry[4][0]) for entry in entries}
    else:
        addresses = {host}
    if not all(address_allowed(address) for address in addresses):
        raise AddressRefused(host)


def checked_address(host: str, port: int) -> tuple[str, str]:
    """(address, "") to connect to, or ("", why not) in words for a job or a page."""
    try:
        return resolve(host, port), ""
    except AddressRefused:
        return "", f"{host} is refused by the platform's egress policy."
    except (OSError, UnicodeError):
        return "", f"{host} does not resolve."
