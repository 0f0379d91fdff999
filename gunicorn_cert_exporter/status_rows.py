"""The rows of one host's status view: what the page, ``/api/v1/status`` and ``check`` show (frozen values)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gunicorn_cert_exporter.bands import Band, Severity, Thresholds
from gunicorn_cert_exporter.model import EndpointReason, FileReason
from gunicorn_cert_exporter.vocabulary import Action

DriftState = Literal["drift", "in sync", "unknown"]
_NOT_LOOKED_AT = frozenset({FileReason.SCAN_DEADLINE.value, EndpointReason.SCAN_FAILED.value})


@dataclass(frozen=True, slots=True)
class CertRow:
    """One certificate of a file or of a served chain."""

    index: int
    subject: str
    issuer: str
    not_after: float
    days_left: float
    band: Band
    note: str
    fingerprint_sha256: str
    not_before: float = 0.0
    lifetime_days: float = 0.0  # notAfter - notBefore: what the bands are a share of
    share_left: float | None = None  # of the lifetime (negative once expired); None without a lifetime
    entry: str = ""  # the kubeconfig cluster/user or keystore alias it came from
    kind: str = "certificate"  # or "crl": a CRL's row, its nextUpdate as not_after


@dataclass(frozen=True, slots=True)
class SourceRow:
    """One file, endpoint address or empty pattern: its certificates, most urgent first, or why it has none."""

    kind: Literal["file", "endpoint", "pattern"]
    source: str  # the path, the configured endpoint, or the pattern
    address: str = ""  # the resolved address of an endpoint
    server_name: str = ""
    band: Band = Band.OK  # the most urgent of its certificates and its error
    error: str = ""  # the reason label of the failure, if any
    detail: str = ""
    verified: bool | None = None  # endpoints only
    verify_reason: str = ""
    certs: tuple[CertRow, ...] = ()

    @property
    def soonest(self) -> CertRow | None:
        """Return the certificate that needs attention first."""
        return self.certs[0] if self.certs else None

    @property
    def severity(self) -> Severity:
        """Return its Nagios state: its band's, but a source not looked at this scan is at least UNKNOWN, not CRITICAL.

        A file past the scan's deadline or an endpoint whose scan failed is no finding: what was last known of its
        certificates still counts, and it is UNKNOWN at least.
        """
        if self.error in _NOT_LOOKED_AT:
            return max([Severity.UNKNOWN, *(c.band.severity for c in self.certs)], key=lambda s: s.rank)
        return self.band.severity


@dataclass(frozen=True, slots=True)
class DriftRow:
    """Whether one address of a target serves the leaf of its ``cert_file``."""

    address: str
    state: DriftState
    since: float | None = None
    reason: str = ""  # why the state is unknown


@dataclass(frozen=True, slots=True)
class TargetRow:
    """One Gunicorn target as an operator reads it."""

    name: str
    severity: Severity
    problems: tuple[str, ...]
    endpoint: str
    drift: DriftState
    addresses: tuple[DriftRow, ...]
    key_match: bool | None
    master_up: bool
    master_pid: int | None
    master_started: float | None
    master_error: str
    workers: int
    last_reload: float | None
    decision: Action | Literal[""]  # "" before the first decision
    decision_reason: str
    reload_signals: int
    reload_failures: int


@dataclass(frozen=True, slots=True)
class Summary:
    """Counts for the top of the page: certificates per band, failing sources, drifting targets, blocked reloads."""

    expired: int = 0
    critical: int = 0
    warning: int = 0
    ok: int = 0
    retired: int = 0  # expired anchors of trust stores: shown, never red
    errors: int = 0
    drifting_targets: int = 0
    blocked_reloads: int = 0


@dataclass(frozen=True, slots=True)
class StatusView:
    """Everything the page, the JSON and ``check`` show."""

    generated_at: float
    scanned_at: float | None  # when the stalest scan kind last finished; None before any scan
    status: Severity
    summary: Summary
    targets: tuple[TargetRow, ...]
    sources: tuple[SourceRow, ...]
    thresholds: Thresholds = field(default_factory=Thresholds)
