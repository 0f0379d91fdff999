"""Snapshot to metric families, one part per scan kind; never touches files or sockets."""

from __future__ import annotations

import platform
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gunicorn_cert_exporter import __version__, revocation
from gunicorn_cert_exporter.file_parts import CrlFacts
from gunicorn_cert_exporter.metrics.catalogue import BY_NAME, CATALOGUE
from gunicorn_cert_exporter.metrics.samples import Sink, label
from gunicorn_cert_exporter.metrics.spec import Spec
from gunicorn_cert_exporter.metrics.target_series import add_target
from gunicorn_cert_exporter.model import (
    AriResult,
    CertFacts,
    DiscoveryReport,
    EndpointResult,
    FileResult,
    PatternResult,
    RenewalAdvice,
    RevocationUrl,
    Snapshot,
)
from gunicorn_cert_exporter.reasons import EndpointReason
from gunicorn_cert_exporter.vocabulary import ScanKind


def cert_labels(cert: CertFacts) -> list[str]:
    """Return the identity label values of a certificate, in catalogue order."""
    return [
        cert.fingerprint_sha256,
        cert.serial,
        label(cert.subject_cn),
        label(cert.issuer_cn),
        cert.key_type,
        str(cert.key_bits),
        cert.signature_algorithm,
        str(cert.is_ca).lower(),
        str(cert.self_signed).lower(),
    ]


def empty_family(spec: Spec) -> GaugeMetricFamily | CounterMetricFamily:
    """Return the catalogue family ``spec`` with no sample yet."""
    cls = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
    return cls(spec.name, spec.help, labels=list(spec.labels))


class Families:
    """Metric families being filled for one scrape, created on first use."""

    def __init__(self) -> None:
        self._families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}

    def add(self, name: str, labels: Sequence[str], value: float) -> None:
        """Add one sample to the named family of the catalogue."""
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = empty_family(BY_NAME[name])
        family.add_metric(list(labels), value)

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._families.values())

    @property
    def by_name(self) -> dict[str, Metric]:
        """Return the families filled so far, by name."""
        return dict(self._families)


@dataclass(frozen=True, slots=True)
class Entity:
    """What renders together: one file, glob pattern or endpoint, or the whole of a small kind.

    Equal ``value``s give equal series, so a render may reuse what it made for an equal value under the same key.
    """

    key: Hashable
    value: object
    add: Callable[[Sink], None]


def kind_inputs(kind: ScanKind, snap: Snapshot) -> object:
    """Return what the families of ``kind`` are built from: equal inputs give equal families."""
    if kind is ScanKind.FILES:  # the CRLs among the files answer for endpoints' certificates too
        return (snap.files, snap.patterns, revocation.verdicts(snap), snap.revocation_urls)
    if kind is ScanKind.ENDPOINTS:
        return snap.endpoints
    if kind is ScanKind.GUNICORN:
        return (snap.targets, frozenset((e.endpoint, e.server_name) for e in snap.endpoints), snap.discovery)
    if kind is ScanKind.ARI:
        return snap.ari
    return (snap.scans, snap.config_reload_successful, snap.config_reload_at)


def kind_entities(kind: ScanKind, snap: Snapshot) -> list[Entity]:
    """Split the part of ``kind`` into entities, in the order their series appear in each family."""
    if kind is ScanKind.FILES:
        answers = revocation.verdicts(snap)
        return [
            *(Entity(("file", f.path), f, partial(add_file, result=f)) for f in snap.files),
            *(Entity(("pattern", p.pattern), p, partial(add_pattern, pattern=p)) for p in snap.patterns),
            Entity(("revocation",), answers, partial(add_revocations, verdicts=answers)),
            Entity(("revocation_urls",), snap.revocation_urls, partial(add_revocation_urls, urls=snap.revocation_urls)),
        ]
    if kind is ScanKind.ENDPOINTS:
        return [
            Entity(("endpoint", e.endpoint, e.server_name), e, partial(add_endpoint, endpoint=e))
            for e in snap.endpoints
        ]
    if kind is ScanKind.ARI:
        return [Entity(("ari", a.kind, a.source, a.fingerprint_sha256), a, partial(add_ari, ari=a)) for a in snap.ari]
    add = partial(_add_gunicorn if kind is ScanKind.GUNICORN else add_exporter, snap=snap)
    return [Entity((kind.value,), kind_inputs(kind, snap), add)]


def kind_families(kind: ScanKind, snap: Snapshot) -> Families:
    """Build the families of one kind from the snapshot."""
    out = Families()
    for entity in kind_entities(kind, snap):
        entity.add(out)
    return out


def _add_gunicorn(out: Sink, snap: Snapshot) -> None:
    """Targets' endpoints belong to the ``gunicorn`` kind, except those also configured as endpoints (shown once,
    by the ``endpoints`` kind): a target scan never re-renders the configured endpoints, nor the reverse.
    """
    seen = {(e.endpoint, e.server_name) for e in snap.endpoints}
    for target in snap.targets:
        key = (target.endpoint.endpoint, target.endpoint.server_name)
        if key not in seen:
            seen.add(key)
            add_endpoint(out, target.endpoint)
    for target in snap.targets:
        add_target(out, target)
    add_discovery(out, snap.discovery)


def add_discovery(out: Sink, report: DiscoveryReport) -> None:
    """Add what discovery found: the count of masters and those that can't be targets."""
    if not report.enabled:
        return
    out.add("gunicorn_cert_discovered_masters", [], report.masters)
    for error in report.errors:
        out.add("gunicorn_cert_discovery_error", [label(error.target), error.reason], 1.0)


class SnapshotCollector(Collector):
    """Expose the store's last snapshot; sources that left the config leave the output with it."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterable[Metric]:
        """Name every family without building a snapshot (keeps registration cheap)."""
        for spec in CATALOGUE:
            yield empty_family(spec)

    def collect(self) -> Iterable[Metric]:
        """Build the families from the current snapshot, each family once, in catalogue order."""
        snap = self._snapshot()
        parts = [kind_families(kind, snap).by_name for kind in ScanKind]
        for spec in CATALOGUE:
            merged: Metric | None = None
            for part in parts:
                family = part.get(spec.name)
                if family is None:
                    continue
                if merged is None:
                    merged = family
                else:
                    merged.samples.extend(family.samples)
            if merged is not None:
                yield merged


def add_file(out: Sink, result: FileResult) -> None:
    """Add the series of one scanned file."""
    path = label(result.path)
    out.add("gunicorn_cert_file_up", [path], 1.0 if result.up else 0.0)
    if result.error is not None:
        out.add("gunicorn_cert_file_error", [path, result.error.value], 1.0)
    if result.changed_at is not None:
        out.add("gunicorn_cert_file_changed_timestamp_seconds", [path], result.changed_at)
    out.add("gunicorn_cert_file_certificates", [path], len(result.certs))
    out.add("gunicorn_cert_file_private_keys", [path], len(result.keys))
    if result.trust_store:
        out.add("gunicorn_cert_file_trust_store", [path], 1.0)
    for index, cert in enumerate(result.certs):
        position = [path, str(index), label(result.entry(index))]
        out.add("gunicorn_cert_file_not_after_timestamp_seconds", position, cert.not_after)
        out.add("gunicorn_cert_file_not_before_timestamp_seconds", position, cert.not_before)
        out.add("gunicorn_cert_file_info", [*position, *cert_labels(cert)], 1.0)
    for problem in result.entry_errors:
        out.add("gunicorn_cert_file_entry_error", [path, label(problem.entry), problem.reason.value], 1.0)
    if result.secret_keys:
        out.add("gunicorn_cert_file_secret_keys", [path], result.secret_keys)
    for index, crl in enumerate(result.crls):
        add_crl(out, path, index, crl)


def add_crl(out: Sink, path: str, index: int, crl: CrlFacts) -> None:
    """Add the series of one CRL found in a file."""
    where = [path, str(index)]
    out.add("gunicorn_cert_file_crl_this_update_timestamp_seconds", where, crl.this_update)
    if crl.next_update is not None:
        out.add("gunicorn_cert_file_crl_next_update_timestamp_seconds", where, crl.next_update)
    out.add("gunicorn_cert_file_crl_revoked_entries", where, len(crl.revoked))
    identity = [label(crl.issuer), label(crl.issuer_cn), crl.number, crl.fingerprint_sha256, crl.signature_algorithm]
    out.add("gunicorn_cert_file_crl_info", [*where, *identity], 1.0)
    out.add("gunicorn_cert_file_crl_verified", where, 1.0 if crl.verified else 0.0)
    if crl.verify_error:
        out.add("gunicorn_cert_file_crl_verify_error", [*where, crl.verify_error], 1.0)


def add_revocations(out: Sink, verdicts: Sequence[revocation.Verdict]) -> None:
    """Add what verified CRL files answer for the certificates the exporter reports."""
    for verdict in revocation.overall(verdicts).values():
        where = [label(value) for value in verdict.where]
        out.add("gunicorn_cert_revoked", where, 1.0 if verdict.status == "revoked" else 0.0)
        if verdict.revoked_at is not None:
            out.add("gunicorn_cert_revocation_time_seconds", where, verdict.revoked_at)
    for verdict in verdicts:
        where = [label(value) for value in verdict.where]
        status = [verdict.method, verdict.status, verdict.reason]
        out.add("gunicorn_cert_revocation_status", [*where, *status], 1.0)


def add_revocation_urls(out: Sink, urls: Sequence[RevocationUrl]) -> None:
    """Add each CRL distribution point's nextUpdate and problem, and each OCSP responder's problem."""
    for row in urls:
        if row.method == "crl" and row.next_update is not None:
            out.add("gunicorn_cert_crl_next_update_timestamp_seconds", [label(row.url)], row.next_update)
        if row.error:
            out.add(f"gunicorn_cert_{row.method}_error", [label(row.url), row.error], 1.0)


def add_pattern(out: Sink, pattern: PatternResult) -> None:
    """Add the series of one configured path or glob."""
    out.add("gunicorn_cert_file_pattern_matches", [label(pattern.pattern)], pattern.matches)
    for problem in pattern.problems:
        out.add("gunicorn_cert_file_pattern_error", [label(pattern.pattern), problem.reason.value], 1.0)


def add_endpoint(out: Sink, endpoint: EndpointResult) -> None:
    """Add the series of one endpoint, on each of its addresses."""
    name, sni = label(endpoint.endpoint), label(endpoint.server_name)
    # A name that does not resolve now resolved to nothing, whatever addresses it last had (kept below, down); an
    # endpoint not probed this time (scan_failed) still resolves where it last did, as far as anyone knows.
    resolved = 0 if endpoint.error is EndpointReason.DNS_FAILURE else len(endpoint.addresses)
    out.add("gunicorn_cert_endpoint_addresses", [name, sni], resolved)
    if endpoint.error is not None and not endpoint.addresses:  # no address ever known to report it on
        out.add("gunicorn_cert_endpoint_up", [name, sni, ""], 0.0)
        out.add("gunicorn_cert_endpoint_error", [name, sni, "", endpoint.error.value], 1.0)
    for result in endpoint.addresses:
        where = [name, sni, label(result.address)]
        out.add("gunicorn_cert_endpoint_up", where, 1.0 if result.up else 0.0)
        if result.error is not None:
            out.add("gunicorn_cert_endpoint_error", [*where, result.error.value], 1.0)
            if result.error is EndpointReason.SCAN_DEADLINE:
                _add_chain(out, where, result.chain)  # not probed yet: its last certificates still count
            continue
        out.add("gunicorn_cert_endpoint_verified", where, 1.0 if result.verified else 0.0)
        if result.verify_error is not None:
            out.add("gunicorn_cert_endpoint_verify_error", [*where, result.verify_error.value], 1.0)
        if result.tls_version and result.cipher:  # no empty label values: omitted if the stack did not say
            out.add("gunicorn_cert_endpoint_tls_info", [*where, result.tls_version, result.cipher], 1.0)
        out.add("gunicorn_cert_endpoint_handshake_duration_seconds", where, result.handshake_seconds)
        _add_chain(out, where, result.chain)


def _add_chain(out: Sink, where: list[str], chain: Sequence[CertFacts]) -> None:
    for index, cert in enumerate(chain):
        position = [*where, str(index)]
        out.add("gunicorn_cert_endpoint_not_after_timestamp_seconds", position, cert.not_after)
        out.add("gunicorn_cert_endpoint_not_before_timestamp_seconds", position, cert.not_before)
        out.add("gunicorn_cert_endpoint_info", [*position, *cert_labels(cert)], 1.0)


def add_ari(out: Sink, ari: AriResult) -> None:
    """Add the ACME renewal window series of one certificate where it is seen."""
    where = [ari.kind, label(ari.source), ari.serial]
    out.add("gunicorn_cert_ari_info", [*where, label(ari.directory), label(ari.explanation_url)], 1.0)
    if ari.window_start is not None and ari.window_end is not None:
        out.add("gunicorn_cert_ari_window_start_timestamp_seconds", where, ari.window_start)
        out.add("gunicorn_cert_ari_window_end_timestamp_seconds", where, ari.window_end)
        out.add("gunicorn_cert_ari_renewal_overdue", where, 1.0 if ari.advice is RenewalAdvice.OVERDUE else 0.0)
        out.add("gunicorn_cert_ari_renewal_requested", where, 1.0 if ari.advice is RenewalAdvice.REQUESTED else 0.0)
    if ari.error:
        out.add("gunicorn_cert_ari_error", [*where, ari.error], 1.0)
    if ari.checked_at is not None:
        out.add("gunicorn_cert_ari_last_check_timestamp_seconds", where, ari.checked_at)


def add_exporter(out: Sink, snap: Snapshot) -> None:
    """Add the exporter's own series."""
    out.add("gunicorn_cert_exporter_build_info", [__version__, platform.python_version()], 1.0)
    for kind, stats in snap.scans:
        out.add("gunicorn_cert_exporter_scan_duration_seconds", [kind.value], stats.duration_seconds)
        out.add("gunicorn_cert_exporter_last_scan_timestamp_seconds", [kind.value], stats.finished_at)
        out.add("gunicorn_cert_exporter_scan_coverage_ratio", [kind.value], stats.coverage)
    out.add("gunicorn_cert_exporter_config_last_reload_successful", [], 1.0 if snap.config_reload_successful else 0.0)
    out.add("gunicorn_cert_exporter_config_last_reload_success_timestamp_seconds", [], snap.config_reload_at)
