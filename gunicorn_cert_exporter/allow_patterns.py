"""``probe.allow`` patterns, parsed once when the config loads: what a ``/probe`` request is matched against."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True)
class AllowPattern:
    """One ``probe.allow`` pattern, parsed: a port (None: any) and either a network or a lower-case host glob."""

    text: str
    port: int | None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    host_glob: str | None = None


def parse_allow_pattern(pattern: str) -> AllowPattern:
    """Parse ``host-glob:port``, ``ip:port``, ``cidr:port`` or ``...:*``; raise ValueError saying what is wrong."""
    host, sep, port_text = pattern.rpartition(":")
    if not sep or not host or not (port_text == "*" or (port_text.isdigit() and 0 < int(port_text) < 65536)):
        raise ValueError(f"{pattern!r} is not host:port, cidr:port or host:* (port required)")
    port = None if port_text == "*" else int(port_text)
    host = host.strip("[]")
    if "/" in host or _is_ip(host):
        try:
            return AllowPattern(pattern, port, network=ipaddress.ip_network(host, strict=False))
        except ValueError:
            raise ValueError(f"{pattern!r}: {host!r} is not an IP address or network") from None
    return AllowPattern(pattern, port, host_glob=host.lower())


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
