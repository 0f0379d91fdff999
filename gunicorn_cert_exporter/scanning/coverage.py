"""How much of a scan has a result of that scan, and which timeouts a scan's deadline cannot hold (pure)."""

from __future__ import annotations

from collections.abc import Iterable

from gunicorn_cert_exporter.config import Config
from gunicorn_cert_exporter.model import (
    EndpointReason,
    EndpointResult,
    FileReason,
    FileResult,
    MasterReason,
    TargetState,
)

_NOT_LOOKED_AT = frozenset({EndpointReason.SCAN_DEADLINE, EndpointReason.SCAN_FAILED})
_MASTER_NOT_LOOKED_AT = frozenset({MasterReason.SCAN_DEADLINE, MasterReason.SCAN_FAILED})


def _fresh_endpoint(result: EndpointResult) -> bool:
    return result.error not in _NOT_LOOKED_AT and all(a.error not in _NOT_LOOKED_AT for a in result.addresses)


def _fresh(source: FileResult | EndpointResult | TargetState) -> bool:
    if isinstance(source, FileResult):
        return source.error is not FileReason.SCAN_DEADLINE
    if isinstance(source, EndpointResult):
        return _fresh_endpoint(source)
    return source.master.error not in _MASTER_NOT_LOOKED_AT and _fresh_endpoint(source.endpoint)


def coverage(sources: Iterable[FileResult | EndpointResult | TargetState]) -> float:
    """Return the share of a scan's sources with a result of this scan (1.0 when there are none).

    Not looked at this time: a file past the deadline, an endpoint or address ``scan_deadline``/``scan_failed``, a
    target whose master or endpoint is either.
    """
    fresh = [_fresh(source) for source in sources]
    return sum(fresh) / len(fresh) if fresh else 1.0


def slow_timeouts(config: Config) -> list[tuple[str, float]]:
    """Return each endpoint and target whose ``timeout`` is longer than the scan deadline, with that timeout."""
    deadline = config.scan.deadline
    endpoints = [(f"endpoint {e.address}", e.timeout) for e in config.endpoints if e.timeout > deadline]
    return endpoints + [(f"gunicorn {t.name}", t.timeout) for t in config.gunicorn if t.timeout > deadline]
