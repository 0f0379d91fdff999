"""One host's status: snapshot -> targets, sources sorted by urgency and a summary. Pure.

The HTML page, ``/api/v1/status`` and ``check`` read this view, so they agree on the bands and the order.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from enum import Enum

from gunicorn_cert_exporter import ari_view, revocation
from gunicorn_cert_exporter.bands import DAY, Band, Severity, Thresholds, classify, lifetime, share_left, worst
from gunicorn_cert_exporter.file_parts import CrlFacts
from gunicorn_cert_exporter.model import (
    AddressResult,
    CertFacts,
    DiscoveryError,
    EndpointResult,
    FileResult,
    Snapshot,
    TargetState,
)
from gunicorn_cert_exporter.reasons import MasterReason, PatternReason
from gunicorn_cert_exporter.status_rows import (
    CertRow,
    DiscoveryRow,
    DriftRow,
    DriftState,
    SourceRow,
    StatusView,
    Summary,
    TargetRow,
)
from gunicorn_cert_exporter.status_runbook import runbook_problems, runbook_row
from gunicorn_cert_exporter.vocabulary import Action

API_VERSION = 1


def build(snap: Snapshot, *, now: float, thresholds: Thresholds | None = None) -> StatusView:
    """Judge a snapshot: targets first, then every source sorted by urgency, and the counts."""
    limits = thresholds or Thresholds()
    answers = revocation.by_place(revocation.verdicts(snap))
    sources = [
        _mark(_file_row(f, now=now, limits=limits), answers)
        for f in snap.files
        if f.certs or f.crls or f.error is not None or f.entry_errors
    ]
    sources += [
        SourceRow("pattern", p.pattern, band=Band.WARNING, error="no_match")
        for p in snap.patterns
        if any(problem.reason is PatternReason.NO_MATCH for problem in p.problems)
    ]
    for endpoint in snap.all_endpoints:
        if endpoint.error is not None and not endpoint.addresses:
            sources.append(_endpoint_error(endpoint))
        sources += [_mark(_address_row(endpoint, a, now=now, limits=limits), answers) for a in endpoint.addresses]
    sources = ari_view.apply(sources, snap.ari)  # the ACME server's renewal window (ARI), when asked
    sources.sort(key=_urgency)
    targets = tuple(_target_row(t) for t in snap.targets)
    unseen = tuple(_discovery_row(e) for e in snap.discovery.errors)
    summary = _summary(sources, targets)
    states = [s.severity for s in sources] + [t.severity for t in targets] + [d.severity for d in unseen]
    status = max(states, key=lambda s: s.rank, default=Severity.OK)
    scanned_at = min((stats.finished_at for _, stats in snap.scans), default=None)
    if scanned_at is None:  # nothing scanned yet: an empty page is not an all-clear
        status = Severity.UNKNOWN
    return StatusView(now, scanned_at, status, summary, targets, tuple(sources), limits, unseen)


# A config file that computes certfile/keyfile belongs to a master that serves TLS nobody watches: WARNING. The
# other reasons hold as well for a plain-HTTP Gunicorn (its settings can't be seen at all), so they are shown,
# never judged: a host must not turn yellow for a Gunicorn that may serve no TLS.
_UNWATCHED_TLS = frozenset({"config_not_literal"})


def _discovery_row(error: DiscoveryError) -> DiscoveryRow:
    severity = Severity.WARNING if error.reason in _UNWATCHED_TLS else Severity.OK
    return DiscoveryRow(error.target, error.reason, error.detail, error.file, severity)


def _urgency(row: SourceRow) -> tuple[int, float, str, str]:
    soonest = row.soonest
    return row.band.urgency, soonest.not_after if soonest else float("-inf"), row.source, row.address


def _cert_rows(certs: list[CertRow]) -> tuple[CertRow, ...]:
    return tuple(sorted(certs, key=lambda c: (c.band.urgency, c.not_after, c.index)))


def _cert_row(index: int, cert: CertFacts, *, now: float, limits: Thresholds, trust_store: bool = False) -> CertRow:
    band, note = classify(cert, now=now, thresholds=limits, trust_store=trust_store)
    return CertRow(
        index=index,
        subject=cert.subject_cn or cert.subject,
        issuer=cert.issuer_cn or cert.issuer,
        not_after=cert.not_after,
        days_left=(cert.not_after - now) / DAY,
        band=band,
        note=note,
        fingerprint_sha256=cert.fingerprint_sha256,
        not_before=cert.not_before,
        lifetime_days=lifetime(cert) / DAY,
        share_left=share_left(cert, now=now),
    )


def _file_row(result: FileResult, *, now: float, limits: Thresholds) -> SourceRow:
    trust = result.trust_store
    certs = [
        replace(_cert_row(i, cert, now=now, limits=limits, trust_store=trust), entry=result.entry(i))
        for i, cert in enumerate(result.certs)
    ]
    certs += [_crl_row(i, found, now=now) for i, found in enumerate(result.crls)]
    rows = _cert_rows(certs)
    error, detail = (result.error.value, result.detail) if result.error else ("", "")
    if not error and result.entry_errors:  # one entry failed: the file's other entries are still its rows
        first = result.entry_errors[0]
        error, detail = first.reason.value, f"{first.entry}: {first.detail}"
        if len(result.entry_errors) > 1:
            detail += f" (and {len(result.entry_errors) - 1} more entries)"
    band = Band.ERROR if error else worst([c.band for c in rows])
    return SourceRow("file", result.path, band=band, error=error, detail=detail, certs=rows)


def _crl_row(index: int, found: CrlFacts, *, now: float) -> CertRow:
    band, note = revocation.crl_band(found, now=now)
    until = found.next_update if found.next_update is not None else found.this_update  # no nextUpdate: never stale
    subject = f"CRL of {found.issuer_cn or found.issuer}" + (f" #{found.number}" if found.number else "")
    window = until - found.this_update  # the CRL's own thisUpdate -> nextUpdate: what its bands are a share of
    share = (until - now) / window if window > 0 else None
    return CertRow(index, subject, found.issuer, until, (until - now) / DAY, band, note, found.fingerprint_sha256,
                   not_before=found.this_update, lifetime_days=window / DAY, share_left=share, entry=found.entry,
                   kind="crl")  # fmt: skip


def _mark(row: SourceRow, answers: dict[tuple[str, ...], revocation.Verdict]) -> SourceRow:
    """Make each certificate a verified CRL lists CRITICAL, with the reason and time."""
    if not answers:
        return row
    certs = []
    for cert in row.certs:
        where = (row.source, cert.entry) if row.kind == "file" else (row.source, row.server_name, row.address)
        found = answers.get((*where, str(cert.index))) if cert.kind == "certificate" else None
        if found is not None and found.status == "revoked":
            note = f"revoked ({found.reason or 'no reason given'}){revocation.when(found)} by {found.by}"
            certs.append(replace(cert, band=worst([cert.band, Band.CRITICAL]), note=note))
        else:
            certs.append(cert)
    band = row.band if row.band is Band.ERROR else worst([c.band for c in certs])
    return replace(row, certs=_cert_rows(certs), band=band)


def _endpoint_error(endpoint: EndpointResult) -> SourceRow:
    error = endpoint.error.value if endpoint.error else ""
    return SourceRow(
        "endpoint",
        endpoint.endpoint,
        server_name=endpoint.server_name,
        band=Band.ERROR,
        error=error,
        detail=endpoint.detail,
    )


def _address_row(endpoint: EndpointResult, address: AddressResult, *, now: float, limits: Thresholds) -> SourceRow:
    reason = address.verify_error.value if address.verify_error else ("" if address.verified else "unverified")
    certs = [_cert_row(i, cert, now=now, limits=limits) for i, cert in enumerate(address.chain)]
    if certs and not address.verified:  # the served chain does not verify: clients refuse it
        certs[0] = replace(certs[0], band=worst([certs[0].band, Band.CRITICAL]), note=f"not verified: {reason}")
    rows = _cert_rows(certs)
    error = address.error.value if address.error else ""
    return SourceRow(
        "endpoint",
        endpoint.endpoint,
        address=address.address,
        server_name=endpoint.server_name,
        band=Band.ERROR if error else worst([c.band for c in rows]),
        error=error,
        detail=address.detail,
        verified=address.verified if address.up else None,
        verify_reason="" if address.verified or not address.up else reason,
        certs=rows,
    )


def _drift_rows(target: TargetState) -> tuple[DriftRow, ...]:
    endpoint = target.endpoint
    if not endpoint.addresses:
        reason = endpoint.error.value if endpoint.error else "not probed"
        return (DriftRow(endpoint.endpoint, "unknown", reason=reason),)
    seen = {d.address: d for d in target.drift}
    rows = []
    for address in endpoint.addresses:
        drift = seen.get(address.address)
        if drift is not None and drift.mismatch:
            rows.append(DriftRow(address.address, "drift", since=drift.since))
        elif address.leaf is None:  # nothing was served: the drift can't be known, it is not "in sync"
            rows.append(
                DriftRow(address.address, "unknown", reason=address.error.value if address.error else "no chain")
            )
        elif target.file_leaf is None:
            reason = f"cert_file {target.cert.error.value}" if target.cert.error else "cert_file has no certificate"
            rows.append(DriftRow(address.address, "unknown", reason=reason))
        else:
            rows.append(DriftRow(address.address, "in sync"))
    return tuple(rows)


def _why_no_pairing(target: TargetState) -> str:
    for name, result in (("cert_file", target.cert), ("key_file", target.key)):
        if result.error is not None:
            return f"{name} {result.error.value}"
    if not target.cert.certs:
        return "cert_file holds no certificate"
    if not target.key.keys:
        return "key_file holds no private key"
    return "key_file is encrypted"


def _target_row(target: TargetState) -> TargetRow:
    addresses = _drift_rows(target)
    states = {row.state for row in addresses}
    drift: DriftState = "drift" if "drift" in states else "unknown" if "unknown" in states else "in sync"
    problems: list[tuple[Severity, str]] = []
    if target.key_match is False:
        problems.append((Severity.CRITICAL, "key_file does not match cert_file"))
    elif target.key_match is None:  # an unreadable file is CRITICAL on its own row; this says what it hides
        problems.append((Severity.UNKNOWN, "key pairing unknown: " + _why_no_pairing(target)))
    problems += [(Severity.WARNING, f"drift on {row.address}") for row in addresses if row.state == "drift"]
    problems += [
        (Severity.UNKNOWN, f"drift unknown on {r.address}: {r.reason}") for r in addresses if r.state == "unknown"
    ]
    master = target.master
    if not master.up:
        # A master we may not (or did not) inspect is unknown; one that is missing or another program is a finding.
        blind = master.error in (
            MasterReason.PERMISSION_DENIED,
            MasterReason.UNSUPPORTED_PLATFORM,
            MasterReason.SCAN_FAILED,
        )
        problems.append(
            (
                Severity.UNKNOWN if blind else Severity.WARNING,
                f"master {master.error.value if master.error else 'down'}",
            )
        )
    if target.decision is Action.BLOCKED:
        problems.append((Severity.WARNING, f"reload blocked: {target.decision_reason}"))
    problems += runbook_problems(target)
    return TargetRow(
        name=target.name,
        severity=max((s for s, _ in problems), key=lambda s: s.rank, default=Severity.OK),
        problems=tuple(text for _, text in problems),
        endpoint=target.endpoint.endpoint,
        drift=drift,
        addresses=addresses,
        key_match=target.key_match,
        master_up=master.up,
        master_pid=master.pid,
        master_started=master.start_time,
        master_error=master.error.value if master.error else "",
        workers=len(master.workers),
        last_reload=target.last_reload,
        decision=target.decision or "",
        decision_reason=target.decision_reason,
        reload_signals=target.reload_signals,
        reload_failures=target.reload_failures,
        decision_rule=target.decision_rule or "",
        runbook=runbook_row(target),
        source=target.source,
        worker_class=target.worker_class,
    )


def _summary(sources: list[SourceRow], targets: tuple[TargetRow, ...]) -> Summary:
    certs = [c.band for s in sources for c in s.certs]
    return Summary(
        expired=certs.count(Band.EXPIRED),
        critical=certs.count(Band.CRITICAL),
        warning=certs.count(Band.WARNING) + sum(1 for s in sources if s.kind == "pattern"),
        ok=certs.count(Band.OK),
        retired=certs.count(Band.RETIRED),
        errors=sum(1 for s in sources if s.band is Band.ERROR),
        drifting_targets=sum(1 for t in targets if t.drift == "drift"),
        blocked_reloads=sum(1 for t in targets if t.decision is Action.BLOCKED),
    )


def headline(view: StatusView) -> str:
    """Say the worst state and what makes it so, e.g. ``CRITICAL — 1 expired · 2 errors``."""
    counts = asdict(view.summary)
    order = ("expired", "errors", "critical", "drifting_targets", "blocked_reloads", "warning")
    parts = [f"{counts[k]} {k.replace('_', ' ')}" for k in order if counts[k]]
    if view.scanned_at is None:
        parts = ["no scan finished yet"]
    return f"{view.status.name} — " + (" · ".join(parts) if parts else f"{view.summary.ok} ok")


def document(view: StatusView) -> dict[str, object]:
    """Return the ``/api/v1/status`` document (schema: docs/status-api.md)."""

    def plain(value: object) -> object:
        if isinstance(value, Severity):
            return value.name
        if isinstance(value, Enum):
            return value.value
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return {
        "version": API_VERSION,
        "generated_at": view.generated_at,
        "scanned_at": view.scanned_at,
        "status": view.status.name,
        "headline": headline(view),
        "thresholds": {
            "warning_seconds": view.thresholds.warning.cap,
            "warning_share": view.thresholds.warning.share,
            "critical_seconds": view.thresholds.critical.cap,
            "critical_share": view.thresholds.critical.share,
        },
        "summary": asdict(view.summary),
        "targets": [plain(asdict(t)) for t in view.targets],
        "sources": [plain(asdict(s)) for s in view.sources],
        "discovery_errors": [plain(asdict(d)) for d in view.discovery_errors],
    }
