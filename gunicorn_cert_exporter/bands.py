"""The urgency rule and the Nagios states: one definition for the page, the JSON and `check`.

A certificate is WARNING when its time left falls below the smaller of 28 days and a quarter of its own lifetime
(notAfter - notBefore), CRITICAL below the smaller of 7 days and an eighth of it: a 160-hour certificate warns at
40 hours left, a 90-day one at 22.5 days, a 398-day one at 28. The shipped alert rules compute the same in PromQL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum, IntEnum

from gunicorn_cert_exporter.model import CertFacts

DAY = 86400.0
SHORT_LIVED = 10 * DAY  # below this lifetime, ACME clients renew at half of it left, not a third


@dataclass(frozen=True, slots=True)
class Edge:
    """Where a band begins: below the smaller of ``cap`` seconds and ``share`` of the lifetime left.

    Either part may be None (unused), never both: ``Edge(cap=28 * DAY)`` is a fixed band, ``Edge(share=0.25)`` one
    that follows the lifetime alone.
    """

    cap: float | None = None
    share: float | None = None

    def __post_init__(self) -> None:
        if self.cap is None and self.share is None:
            raise ValueError("an edge needs a duration, a share of the lifetime, or both")

    def seconds(self, lifetime: float) -> float:
        """Return how much time left enters the band, for a certificate valid ``lifetime`` seconds in all."""
        parts = [part for part in (self.cap, None if self.share is None else self.share * lifetime) if part is not None]
        return min(parts)

    def __str__(self) -> str:
        """Spell the edge as it is written in the config and on the command line, e.g. ``28d, 25%``."""
        parts = [] if self.cap is None else [_duration(self.cap)]
        return ", ".join(parts + ([] if self.share is None else [f"{self.share * 100:g}%"]))


def _duration(seconds: float) -> str:
    for unit, size in (("d", DAY), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Where WARNING and CRITICAL begin (the config's ``bands``; ``check --warning/--critical`` override them)."""

    warning: Edge = field(default_factory=lambda: Edge(cap=28 * DAY, share=0.25))
    critical: Edge = field(default_factory=lambda: Edge(cap=7 * DAY, share=0.125))


def renewal_point(*, not_before: float, not_after: float) -> float:
    """Return when an ACME client usually renews: a third of the lifetime left, half under a 10-day lifetime.

    Certbot 4 does this; the share is the ``renew_before_expiry`` that a lineage does not set.
    """
    lifetime = not_after - not_before
    return not_after - lifetime * (0.5 if lifetime < SHORT_LIVED else 1 / 3)


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
    """What needs attention first: a source that can't be read, then expired, critical, warning, ok, retired."""

    ERROR = "error"
    EXPIRED = "expired"
    CRITICAL = "critical"
    WARNING = "warning"
    OK = "ok"
    RETIRED = "retired"  # an expired anchor in a trust store: TLS libraries skip it, nobody renews it in place

    @property
    def urgency(self) -> int:
        """Return the sort position: 0 is the most urgent."""
        return list(Band).index(self)

    @property
    def severity(self) -> Severity:
        """Return the Nagios state of a row in this band."""
        if self in (Band.OK, Band.RETIRED):
            return Severity.OK
        return Severity.WARNING if self is Band.WARNING else Severity.CRITICAL


def lifetime(cert: CertFacts) -> float:
    """Return how long a certificate is valid in all, in seconds (notAfter - notBefore)."""
    return cert.not_after - cert.not_before


def share_left(cert: CertFacts, *, now: float) -> float | None:
    """Return the share of its lifetime a certificate has left (negative once expired); None without a lifetime."""
    total = lifetime(cert)
    share = (cert.not_after - now) / total if total > 0 else None
    return share if share is not None and math.isfinite(share) else None  # no share of an absurd date


def classify(cert: CertFacts, *, now: float, thresholds: Thresholds, trust_store: bool = False) -> tuple[Band, str]:
    """Place a certificate in its band by its validity dates and lifetime; return the band and a short note.

    In a trust store nothing turns red: an expired anchor is retired, an expiring one stays OK.
    """
    left = cert.not_after - now
    if trust_store:
        if left <= 0:
            return Band.RETIRED, "retired: expired trust anchor"
        return Band.OK, "not yet valid" if cert.not_before > now else ""
    if cert.not_before > now:
        return Band.CRITICAL, "not yet valid"
    if left <= 0:
        return Band.EXPIRED, "expired"
    total = lifetime(cert)
    if left < thresholds.critical.seconds(total):
        return Band.CRITICAL, "expires soon"
    if left < thresholds.warning.seconds(total):
        return Band.WARNING, "expires soon"
    return Band.OK, ""


def worst(bands: list[Band]) -> Band:
    """Return the most urgent band of a list (OK when empty)."""
    return min(bands, key=lambda band: band.urgency, default=Band.OK)
