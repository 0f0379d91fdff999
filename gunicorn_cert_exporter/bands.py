"""The validity bands of a certificate and the Nagios states: one definition for the page, the JSON and `check`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum

from gunicorn_cert_exporter.model import CertFacts

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Thresholds:
    """How much validity left is a warning or critical (`check --warning/--critical` override these)."""

    warning: float = 28 * DAY
    critical: float = 7 * DAY


class Severity(IntEnum):
    """A row's state, valued as its Nagios plugin exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @property
    def rank(self) -> int:
        """Return how bad this is: CRITICAL outranks UNKNOWN, which outranks WARNING, which outranks OK."""
        # An unknown drift is worse than an expiry three weeks out, and better than an outage.
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.OK: 0, Severity.WARNING: 1, Severity.UNKNOWN: 2, Severity.CRITICAL: 3}


class Band(str, Enum):
    """What needs attention first: a source that can't be read, then expired, critical, warning, ok."""

    ERROR = "error"
    EXPIRED = "expired"
    CRITICAL = "critical"
    WARNING = "warning"
    OK = "ok"

    @property
    def urgency(self) -> int:
        """Return the sort position: 0 is the most urgent."""
        return list(Band).index(self)

    @property
    def severity(self) -> Severity:
        """Return the Nagios state of a row in this band."""
        return Severity.OK if self is Band.OK else Severity.WARNING if self is Band.WARNING else Severity.CRITICAL


def classify(cert: CertFacts, *, now: float, thresholds: Thresholds) -> tuple[Band, str]:
    """Place a certificate in its band by its validity dates; return the band and a short note."""
    left = cert.not_after - now
    if cert.not_before > now:
        return Band.CRITICAL, "not yet valid"
    if left <= 0:
        return Band.EXPIRED, "expired"
    if left < thresholds.critical:
        return Band.CRITICAL, "expires soon"
    if left < thresholds.warning:
        return Band.WARNING, "expires soon"
    return Band.OK, ""


def worst(bands: list[Band]) -> Band:
    """Return the most urgent band of a list (OK when empty)."""
    return min(bands, key=lambda band: band.urgency, default=Band.OK)
