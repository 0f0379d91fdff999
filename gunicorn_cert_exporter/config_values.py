"""The words a config is written in: durations, shares, band edges, host:port addresses (pure parsers).

Each parser takes what YAML gave and returns a value or raises ValueError with a reason a person can act on;
pydantic turns that into a problem with its key path.
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

from gunicorn_cert_exporter.bands import Edge

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


_LONGEST = 365 * 86400.0


def parse_duration(value: object) -> float:
    """Turn ``30s``, ``5m``, ``1h``, ``1.5d`` or a number of seconds into seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number with a unit, like 30s, 5m, 1h")  # noqa: TRY004
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    else:
        raise ValueError(f"{value!r} is not a duration; use a number with a unit, like 30s, 5m, 1h")
    if not math.isfinite(seconds):  # .inf and .nan are YAML floats
        raise ValueError("a duration is a finite number of seconds")
    if seconds < 0:
        raise ValueError("a duration can't be negative")
    if seconds > _LONGEST:  # past this, timers and timeouts overflow
        raise ValueError("a duration is at most 365d")
    return seconds


def parse_percent(value: object) -> float:
    """Turn ``10%`` or ``0.1`` into a fraction between 0 and 1."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            fraction = float(value.strip()[:-1]) / 100
        except ValueError:
            raise ValueError(f"{value!r} is not a percentage") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        fraction = float(value)
    else:
        raise ValueError(f"{value!r} is not a percentage like 10%")
    if not 0 <= fraction <= 1:
        raise ValueError("must be between 0% and 100%")
    return fraction


def parse_edge(value: object) -> Edge:
    """Turn ``28d`` (fixed), ``25%`` (of the lifetime) or ``28d, 25%`` (the smaller of the two) into a band's Edge."""
    if isinstance(value, Edge):
        return value
    if not isinstance(value, str):
        return Edge(cap=_positive(parse_duration(value)))
    parts = [part.strip() for part in value.split(",")]
    shares = [_positive(parse_percent(p)) for p in parts if p.endswith("%")]
    caps = [_positive(parse_duration(p)) for p in parts if not p.endswith("%")]
    if len(shares) > 1 or len(caps) > 1:
        raise ValueError(f"{value!r}: at most one duration and one share, like 28d, 25%")
    return Edge(cap=caps[0] if caps else None, share=shares[0] if shares else None)


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("a band's edge must be more than 0")
    return value


def split_host_port(address: str) -> tuple[str, int]:
    """Split ``host:port`` or ``[v6]:port``; raise ValueError with a readable message."""
    if address.startswith("["):
        host, sep, port = address[1:].partition("]:")
        if not sep:
            raise ValueError(f"{address!r}: an IPv6 address is written [addr]:port")
    else:
        host, sep, port = address.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"{address!r} is not host:port (IPv6 is written [addr]:port)")
    if not host or any(c in host for c in "/@?#\\ \t\r\n"):
        raise ValueError(f"{address!r} has no valid host")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} needs a port between 1 and 65535")
    return host, int(port)


def parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Return the address if a host is an IPv4 or IPv6 literal; None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _positive_timeout(value: float) -> float:
    if value <= 0:
        raise ValueError("timeout must be more than 0s")
    return value


Timeout = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive_timeout)]
Fraction = Annotated[float, BeforeValidator(parse_percent)]
