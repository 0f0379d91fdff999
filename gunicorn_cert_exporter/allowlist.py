"""The /probe allow-list: a target is probed only if a ``probe.allow`` pattern permits it exactly."""

from __future__ import annotations

import fnmatch
import re
import socket
from collections.abc import Sequence

from gunicorn_cert_exporter.allow_patterns import AllowPattern
from gunicorn_cert_exporter.config_values import parse_ip, split_host_port

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$")


def valid_server_name(name: str) -> bool:
    """Tell whether a server name is a plain DNS name (no ports, paths or control characters)."""
    return bool(_HOSTNAME.match(name))


def parse_target(target: str) -> tuple[str, int] | None:
    """Return (host, port) for a plain ``host:port`` or ``[v6]:port``; None for anything else."""
    try:
        host, port = split_host_port(target)
    except ValueError:
        return None
    if parse_ip(host) is None and (not valid_server_name(host) or _legacy_ipv4(host)):
        return None
    return host, port


def _legacy_ipv4(host: str) -> bool:
    """Tell whether the resolver would read a host as an old numeric IPv4 form (``127.1``, ``0x7f.1``, ``2130706433``).

    Such a host is no name, so a name pattern must not match it, and no canonical address, so no network either.
    """
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


def allowed(target: str, patterns: Sequence[AllowPattern]) -> bool:
    """Tell whether ``target`` matches a ``host-glob:port``, ``ip:port`` or ``cidr:port`` pattern (parsed at load)."""
    parsed = parse_target(target)
    if parsed is None:
        return False
    host, port = parsed
    ip = parse_ip(host)
    for pattern in patterns:
        if pattern.port is not None and pattern.port != port:
            continue
        if pattern.network is not None:
            if ip is not None and ip.version == pattern.network.version and ip in pattern.network:
                return True
        elif (
            ip is None
            and pattern.host_glob is not None
            and fnmatch.fnmatchcase(host.lower().rstrip("."), pattern.host_glob)
        ):
            return True
    return False
