"""Frozen values passed between layers: certificate facts, scan results and the snapshot a scrape reads."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal, NamedTuple

from gunicorn_cert_exporter.file_parts import CrlFacts, EntryProblem
from gunicorn_cert_exporter.file_parts import Parsed as Parsed  # noqa: PLC0414  (re-exported for the parsers)
from gunicorn_cert_exporter.reasons import EndpointReason, FileReason, MasterReason, PatternReason, VerifyReason
from gunicorn_cert_exporter.runbook import PreviousLeaf, WorkerAccess
from gunicorn_cert_exporter.vocabulary import Action, Channel, Rule, ScanKind


@dataclass(frozen=True, slots=True)
class CertFacts:
    """What one X.509 certificate says about itself."""

    not_before: float
    not_after: float
    fingerprint_sha256: str
    serial: str
    subject_cn: str
    issuer_cn: str
    subject: str
    issuer: str
    sans: tuple[str, ...]
    key_type: str
    key_bits: int
    spki_sha256: str
    signature_algorithm: str
    is_ca: bool
    self_signed: bool
    ca_issuers: tuple[str, ...] = ()  # AIA caIssuers URLs: where the issuer's certificate can be fetched
    authority_key_id: str = ""  # the AKI keyIdentifier in hex: with the serial, ARI's certID (RFC 9773)
    # The SubjectPublicKeyInfo (DER) of a CA or self-signed certificate: what a CRL it signed is verified with.
    public_key_der: bytes = field(default=b"", repr=False)
    crl_urls: tuple[str, ...] = ()  # the CRL Distribution Points' URIs (revocation_pool.py fetches the http:// ones)
    ocsp_urls: tuple[str, ...] = ()  # the AIA OCSP responders' URIs
    issuer_name_der: bytes = field(default=b"", repr=False)  # the issuer name as encoded: an OCSP CertID hashes it


@dataclass(frozen=True, slots=True)
class KeyFacts:
    """The public half of a private key found in a file; never the key itself."""

    key_type: str
    key_bits: int
    spki_sha256: str | None  # None when the key is encrypted and we hold no password for it
    encrypted: bool = False


class FileIdentity(NamedTuple):
    """What tells that a file's content may have changed, without reading it (a tuple: built every rescan)."""

    device: int
    inode: int
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class FileResult:
    """One scanned file: its certificates and keys, or why it could not be read."""

    path: str
    certs: tuple[CertFacts, ...] = ()
    keys: tuple[KeyFacts, ...] = ()
    error: FileReason | None = None
    detail: str = ""
    changed_at: float | None = None
    identity: FileIdentity | None = None
    content_sha256: str | None = None
    trust_store: bool = False  # from a ``trust_store: true`` files entry: anchors, not certificates to renew
    entries: tuple[str, ...] = ()  # beside ``certs``: the entry each came from, or () for a plain file
    entry_errors: tuple[EntryProblem, ...] = ()
    crls: tuple[CrlFacts, ...] = ()
    secret_keys: int = 0
    followed: tuple[str, ...] = ()

    def entry(self, index: int) -> str:
        """Return the entry the certificate at ``index`` came from ("" in a plain file)."""
        return self.entries[index] if index < len(self.entries) else ""

    @property
    def up(self) -> bool:
        """Tell whether the file was read and understood completely."""
        return self.error is None


@dataclass(frozen=True, slots=True)
class PatternProblem:
    """One reason a pattern's matches may be incomplete, with a human detail (e.g. the directory)."""

    reason: PatternReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class PatternResult:
    """How many files one configured path or glob matched, and why the list may be incomplete."""

    pattern: str
    matches: int
    problems: tuple[PatternProblem, ...] = ()


@dataclass(frozen=True, slots=True)
class AddressResult:
    """One TLS handshake with one resolved address of an endpoint."""

    address: str
    chain: tuple[CertFacts, ...] = ()
    error: EndpointReason | None = None
    detail: str = ""
    verified: bool = False
    verify_error: VerifyReason | None = None
    tls_version: str = ""
    cipher: str = ""
    handshake_seconds: float = 0.0

    @property
    def up(self) -> bool:
        """Tell whether a handshake completed and a chain was served."""
        return self.error is None

    @property
    def leaf(self) -> CertFacts | None:
        """Return the served leaf, if any."""
        return self.chain[0] if self.chain else None


def down_at(addresses: Iterable[str], reason: EndpointReason, detail: str) -> tuple[AddressResult, ...]:
    """Addresses not probed this time, each down with ``reason``: their series stay while the source is broken."""
    return tuple(AddressResult(address=a, error=reason, detail=detail) for a in addresses)


@dataclass(frozen=True, slots=True)
class EndpointResult:
    """Every resolved address of one configured endpoint."""

    endpoint: str
    server_name: str
    addresses: tuple[AddressResult, ...] = ()
    # Set only when no address was probed: the name did not resolve (DNS), or the Gunicorn target's scan failed.
    # ``addresses`` then holds the addresses it last resolved to, each failed with the same reason, or none if no
    # address is known yet.
    error: EndpointReason | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """A process as the platform reports it; enough to tell one process from a later one with its pid."""

    pid: int
    ppid: int
    start_time: float
    cmdline: tuple[str, ...]
    name: str


@dataclass(frozen=True, slots=True)
class MasterState:
    """The Gunicorn master of a target, proven or not."""

    pid: int | None = None
    start_time: float | None = None
    workers: tuple[ProcessInfo, ...] = ()
    error: MasterReason | None = None
    detail: str = ""
    successor: int | None = None  # a new master forked by USR2, while the old one still runs
    channel: Channel = "pidfile"  # what proved it
    reloads: int | None = None  # the master's own reload count (control socket only)

    @property
    def up(self) -> bool:
        """Tell whether a live Gunicorn master was identified."""
        return self.error is None and self.pid is not None

    @property
    def workers_since(self) -> float | None:
        """Return when the oldest live worker started: every worker has loaded its cert since then."""
        if not self.workers:
            return None
        return min(w.start_time for w in self.workers)


@dataclass(frozen=True, slots=True)
class AddressDrift:
    """Whether one address serves another leaf than the target's ``cert_file``."""

    address: str
    mismatch: bool
    since: float | None = None


def clamp_to_now(value: float | None, *, now: float) -> float | None:
    """Return a "never goes backwards" time (last reload, drift since) as at most ``now``; None if it is no time.

    Such a value keeps the maximum it has seen: one absurd reading (an uptime of -1e300, NaN) must not stay forever.
    """
    if value is None or not math.isfinite(value):
        return None
    return min(value, now)


TargetSource = Literal["config", "discovery"]


@dataclass(frozen=True, slots=True)
class DiscoveryError:
    """A Gunicorn master that is no target because what it was told can't be read: the series discovery_error."""

    target: str  # the name it would have
    reason: str  # a gunicorn_settings.Problem value, or permission_denied
    detail: str
    file: str = ""  # the config file it would need


@dataclass(frozen=True, slots=True)
class DiscoveryReport:
    """What the last gunicorn scan's discovery found: how many masters, and those that can't be targets."""

    enabled: bool = False
    masters: int = 0
    errors: tuple[DiscoveryError, ...] = ()


@dataclass(frozen=True, slots=True)
class TargetState:
    """Everything known about one Gunicorn target after a scan."""

    name: str
    cert: FileResult
    key: FileResult
    endpoint: EndpointResult
    master: MasterState
    drift: tuple[AddressDrift, ...] = ()
    key_match: bool | None = None
    last_reload: float | None = None
    reload_signals: int = 0
    reload_failures: int = 0
    decision: Action | None = None  # the last reload decision (None before one is made), and why in words
    decision_reason: str = ""
    decision_rule: Rule | None = None  # the rule that made the decision
    history_problem: str = ""  # the reload history could not be read or written
    access: WorkerAccess | None = None  # None: no proven master, or its workers' identity can't be known
    next_window: float | None = None  # when reload.window next opens (now while open); None without a window
    previous_leaves: tuple[PreviousLeaf, ...] = ()  # oldest first: the leaves confirmed reloads replaced
    failure_reasons: tuple[tuple[str, int], ...] = ()  # reload failures per reason (runbook.FAILURE_REASONS)
    source: TargetSource = "config"  # where the target comes from: the config, or discovery (never set in YAML)
    worker_class: str = ""  # Gunicorn's worker class as discovery learned it; "" when unknown

    @property
    def file_leaf(self) -> CertFacts | None:
        """Return the leaf certificate of ``cert_file``, if it parsed."""
        return self.cert.certs[0] if self.cert.certs else None


class RenewalAdvice(str, Enum):
    """What the ACME server's renewal window (ARI, RFC 9773) says of a certificate still in use."""

    OK = "ok"  # the window is ahead, as usual
    OVERDUE = "overdue"  # the window has ended and the same certificate is still on disk or served
    REQUESTED = "requested"  # the CA asks for renewal now: an early window, or one moved earlier than first seen
    UNKNOWN = "unknown"  # no window known (yet): see ``error``


@dataclass(frozen=True, slots=True)
class AriResult:
    """The renewal window the ACME server suggests for one certificate where it is seen (a file, endpoint, target)."""

    kind: str  # "file", "endpoint" or "target"
    source: str  # the path, the configured endpoint, or the target's name
    fingerprint_sha256: str
    serial: str
    directory: str  # the ACME directory URL asked
    advice: RenewalAdvice = RenewalAdvice.UNKNOWN
    note: str = ""
    window_start: float | None = None
    window_end: float | None = None
    explanation_url: str = ""
    error: str = ""  # a sources.fetch.FetchReason value, or "no_key_identifier", "no_renewal_info"
    checked_at: float | None = None


@dataclass(frozen=True, slots=True)
class ScanStats:
    """How long the last scan of one kind took and when it finished."""

    duration_seconds: float
    finished_at: float
    coverage: float = 1.0  # the share of its sources with a fresh result (the rest were past the deadline)


@dataclass(frozen=True, slots=True)
class LeafRevocation:
    """What one fetched CRL or OCSP responder answered for one reported certificate (revocation_pool.py)."""

    where: tuple[str, str, str, str, str, str]  # path, entry, endpoint, server_name, address, index
    method: str  # "crl" or "ocsp"
    status: str  # "good", "revoked" or "unknown"
    reason: str  # revoked: the CRL/OCSP reason ("" if none given); unknown: why (issuer_unknown, a fetch's reason)
    revoked_at: float | None = None
    url: str = ""
    fingerprint_sha256: str = ""  # the certificate answered for (a reload policy asks by fingerprint)


@dataclass(frozen=True, slots=True)
class RevocationUrl:
    """One CRL Distribution Point or OCSP responder asked: its last problem, and a CRL's nextUpdate."""

    method: str  # "crl" or "ocsp"
    url: str
    error: str = ""  # timeout, too_large, http_status, parse_error, bad_signature, stale, refused_address, ...
    next_update: float | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The last completed results of every scan: what every scrape reads."""

    files: tuple[FileResult, ...] = ()
    patterns: tuple[PatternResult, ...] = ()
    endpoints: tuple[EndpointResult, ...] = ()
    targets: tuple[TargetState, ...] = ()
    scans: tuple[tuple[ScanKind, ScanStats], ...] = ()
    config_reload_successful: bool = True
    config_reload_at: float = 0.0
    discovery: DiscoveryReport = DiscoveryReport()
    ari: tuple[AriResult, ...] = ()  # published by the ARI pool (scanning/renewals.py), never by a scan
    revocation: tuple[LeafRevocation, ...] = ()  # published by the revocation pool (scanning/revocation_pool.py)
    revocation_urls: tuple[RevocationUrl, ...] = ()

    @property
    def all_endpoints(self) -> tuple[EndpointResult, ...]:
        """Return configured endpoints and those of Gunicorn targets, each (endpoint, server_name) once."""
        seen: set[tuple[str, str]] = set()
        out = []
        for result in (*self.endpoints, *(t.endpoint for t in self.targets)):
            if (result.endpoint, result.server_name) not in seen:
                seen.add((result.endpoint, result.server_name))
                out.append(result)
        return tuple(out)
