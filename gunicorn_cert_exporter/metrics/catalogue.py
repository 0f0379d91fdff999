"""The metric catalogue: every family the exporter emits, with its type, help and labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Spec:
    """One metric family: name, type, help text and label names."""

    name: str
    kind: Literal["gauge", "counter"]
    help: str
    labels: tuple[str, ...]


_CERT = (
    "fingerprint_sha256",
    "serial",
    "subject_cn",
    "issuer_cn",
    "key_type",
    "key_bits",
    "signature_algorithm",
    "is_ca",
    "self_signed",
)
_FILE = ("path", "index", "entry")  # entry: the kubeconfig cluster/user or keystore alias, "" in a plain file
_CRL = ("path", "index")  # index: the CRL's position among the file's CRLs
_REVOKED = ("path", "entry", "endpoint", "server_name", "address", "index")  # a file's or a served chain's cert
_ADDR = ("endpoint", "server_name", "address")
_CHAIN = (*_ADDR, "index")

_ARI = ("kind", "source", "serial")
ARI: tuple[Spec, ...] = (
    Spec(
        "gunicorn_cert_ari_window_start_timestamp_seconds",
        "gauge",
        "Start of the renewal window the ACME server suggests for this certificate (ARI, RFC 9773).",
        _ARI,
    ),
    Spec(
        "gunicorn_cert_ari_window_end_timestamp_seconds",
        "gauge",
        "End of the renewal window the ACME server suggests for this certificate (ARI, RFC 9773).",
        _ARI,
    ),
    Spec(
        "gunicorn_cert_ari_info",
        "gauge",
        "The ACME directory asked and the CA's explanation URL of the window (empty if none); always 1.",
        (*_ARI, "directory", "explanation_url"),
    ),
    Spec(
        "gunicorn_cert_ari_renewal_overdue",
        "gauge",
        "1 while the ACME window has ended and this certificate is still on disk or served, else 0.",
        _ARI,
    ),
    Spec(
        "gunicorn_cert_ari_renewal_requested",
        "gauge",
        "1 while the CA asks for renewal now (an early window, or one moved earlier), else 0.",
        _ARI,
    ),
    Spec(
        "gunicorn_cert_ari_error",
        "gauge",
        "1 while the last ARI request for this certificate failed, with the reason.",
        (*_ARI, "reason"),
    ),
    Spec(
        "gunicorn_cert_ari_last_check_timestamp_seconds",
        "gauge",
        "When the ACME server was last asked about this certificate.",
        _ARI,
    ),
)

CATALOGUE: tuple[Spec, ...] = (
    Spec(
        "gunicorn_cert_file_not_after_timestamp_seconds",
        "gauge",
        "When the certificate at this position of the file expires (notAfter).",
        _FILE,
    ),
    Spec(
        "gunicorn_cert_file_not_before_timestamp_seconds",
        "gauge",
        "When the certificate at this position of the file becomes valid (notBefore).",
        _FILE,
    ),
    Spec("gunicorn_cert_file_info", "gauge", "Identity of a certificate in a file; always 1.", (*_FILE, *_CERT)),
    Spec("gunicorn_cert_file_up", "gauge", "1 if the file was read and fully understood, else 0.", ("path",)),
    Spec("gunicorn_cert_file_error", "gauge", "1 while the file fails, with the reason.", ("path", "reason")),
    Spec(
        "gunicorn_cert_file_changed_timestamp_seconds",
        "gauge",
        "Last time the file's content was seen to change (its mtime when first seen).",
        ("path",),
    ),
    Spec("gunicorn_cert_file_certificates", "gauge", "Number of certificates in the file.", ("path",)),
    Spec("gunicorn_cert_file_private_keys", "gauge", "Number of private keys in the file.", ("path",)),
    Spec(
        "gunicorn_cert_file_entry_error",
        "gauge",
        "1 while one entry of a kubeconfig or keystore gives no certificate, with the reason.",
        ("path", "entry", "reason"),
    ),
    Spec("gunicorn_cert_file_secret_keys", "gauge", "Number of JCEKS secret-key entries (never read).", ("path",)),
    Spec(
        "gunicorn_cert_file_crl_this_update_timestamp_seconds",
        "gauge",
        "When the CRL at this position of the file was issued (thisUpdate).",
        _CRL,
    ),
    Spec(
        "gunicorn_cert_file_crl_next_update_timestamp_seconds",
        "gauge",
        "When the CRL at this position of the file must be replaced (nextUpdate); relying servers refuse after it.",
        _CRL,
    ),
    Spec("gunicorn_cert_file_crl_revoked_entries", "gauge", "Number of certificates the CRL lists as revoked.", _CRL),
    Spec(
        "gunicorn_cert_file_crl_info",
        "gauge",
        "Identity of a CRL in a file; always 1.",
        (*_CRL, "issuer", "issuer_cn", "crl_number", "fingerprint_sha256", "signature_algorithm"),
    ),
    Spec(
        "gunicorn_cert_file_crl_verified",
        "gauge",
        "1 if the CRL's signature verifies against an issuer certificate the exporter sees, else 0.",
        _CRL,
    ),
    Spec(
        "gunicorn_cert_file_crl_verify_error",
        "gauge",
        "1 while the CRL's signature can't be verified, with why (issuer_unknown, bad_signature).",
        (*_CRL, "reason"),
    ),
    Spec(
        "gunicorn_cert_revoked",
        "gauge",
        "1 if a verified CRL or OCSP answer says revoked, 0 if one says good; absent when none answers.",
        _REVOKED,
    ),
    Spec(
        "gunicorn_cert_revocation_time_seconds",
        "gauge",
        "When the certificate was revoked, as the CRL or OCSP responder says.",
        _REVOKED,
    ),
    Spec(
        "gunicorn_cert_revocation_status",
        "gauge",
        "The revocation answer for a certificate, by method (crl_file, crl, ocsp), status and reason; always 1.",
        (*_REVOKED, "method", "status", "reason"),
    ),
    Spec(
        "gunicorn_cert_crl_next_update_timestamp_seconds",
        "gauge",
        "The nextUpdate of the last CRL fetched from a leaf's CRL Distribution Point.",
        ("url",),
    ),
    Spec(
        "gunicorn_cert_crl_error",
        "gauge",
        "1 while a CRL Distribution Point gives no usable CRL, with why (timeout, too_large, bad_signature, ...).",
        ("url", "reason"),
    ),
    Spec(
        "gunicorn_cert_ocsp_error",
        "gauge",
        "1 while an OCSP responder gives no usable answer, with why (timeout, bad_signature, stale, ...).",
        ("url", "reason"),
    ),
    Spec(
        "gunicorn_cert_file_trust_store",
        "gauge",
        "1 if the file is a trust store (trust_store: true): its anchors are never renewed; absent otherwise.",
        ("path",),
    ),
    Spec(
        "gunicorn_cert_file_pattern_matches",
        "gauge",
        "Number of files a configured path, glob or directory matched.",
        ("pattern",),
    ),
    Spec(
        "gunicorn_cert_file_pattern_error",
        "gauge",
        "1 while a pattern's matches may be incomplete or empty, with the reason.",
        ("pattern", "reason"),
    ),
    Spec(
        "gunicorn_cert_endpoint_up",
        "gauge",
        "1 if a TLS handshake with this address completed, verified or not.",
        _ADDR,
    ),
    Spec("gunicorn_cert_endpoint_error", "gauge", "1 while the address fails, with the reason.", (*_ADDR, "reason")),
    Spec(
        "gunicorn_cert_endpoint_verified",
        "gauge",
        "1 if the served chain verified against the trust store and the server name.",
        _ADDR,
    ),
    Spec(
        "gunicorn_cert_endpoint_verify_error",
        "gauge",
        "1 while the served chain fails verification, with why.",
        (*_ADDR, "reason"),
    ),
    Spec(
        "gunicorn_cert_endpoint_tls_info",
        "gauge",
        "Negotiated TLS version and cipher; always 1.",
        (*_ADDR, "version", "cipher"),
    ),
    Spec(
        "gunicorn_cert_endpoint_handshake_duration_seconds",
        "gauge",
        "Time to connect and complete the TLS handshake.",
        _ADDR,
    ),
    Spec(
        "gunicorn_cert_endpoint_not_after_timestamp_seconds",
        "gauge",
        "When the served certificate at this chain position expires (index 0 is the leaf).",
        _CHAIN,
    ),
    Spec(
        "gunicorn_cert_endpoint_not_before_timestamp_seconds",
        "gauge",
        "When the served certificate at this chain position becomes valid.",
        _CHAIN,
    ),
    Spec("gunicorn_cert_endpoint_info", "gauge", "Identity of a served certificate; always 1.", (*_CHAIN, *_CERT)),
    Spec(
        "gunicorn_cert_endpoint_addresses",
        "gauge",
        "Number of addresses the endpoint resolved to (0 while its name does not resolve).",
        ("endpoint", "server_name"),
    ),
    Spec(
        "gunicorn_cert_fingerprint_mismatch",
        "gauge",
        "1 if the address serves another leaf than the target's cert_file (drift), else 0.",
        ("target", "address"),
    ),
    Spec(
        "gunicorn_cert_fingerprint_mismatch_since_timestamp_seconds",
        "gauge",
        "When the current drift began.",
        ("target", "address"),
    ),
    Spec(
        "gunicorn_cert_key_match",
        "gauge",
        "1 if key_file holds the private key of cert_file's leaf, else 0.",
        ("target",),
    ),
    Spec(
        "gunicorn_cert_target_file_not_after_timestamp_seconds",
        "gauge",
        "When the leaf in the target's cert_file expires.",
        ("target",),
    ),
    Spec(
        "gunicorn_cert_target_served_not_after_timestamp_seconds",
        "gauge",
        "When the leaf the target serves on this address expires.",
        ("target", "address"),
    ),
    Spec(
        "gunicorn_cert_master_up",
        "gauge",
        "1 if the target's Gunicorn master is alive and proven, else 0.",
        ("target",),
    ),
    Spec(
        "gunicorn_cert_master_error",
        "gauge",
        "1 while the master can't be proven, with the reason.",
        ("target", "reason"),
    ),
    Spec(
        "gunicorn_cert_master_info",
        "gauge",
        "The channel that proves the master and reloads it (pidfile, pid or control_socket); always 1.",
        ("target", "channel"),
    ),
    Spec(
        "gunicorn_cert_master_pid",
        "gauge",
        "The pid of the master (as the pidfile, pid or control socket names it), in Gunicorn's PID namespace.",
        ("target",),
    ),
    Spec("gunicorn_cert_master_start_timestamp_seconds", "gauge", "When the Gunicorn master started.", ("target",)),
    Spec("gunicorn_cert_master_workers", "gauge", "Number of live worker processes of the master.", ("target",)),
    Spec(
        "gunicorn_cert_last_reload_timestamp_seconds",
        "gauge",
        "Last time the workers were replaced (the oldest live worker's start), seen or caused.",
        ("target",),
    ),
    Spec("gunicorn_cert_reload_signals", "counter", "SIGHUPs the exporter sent to the master.", ("target",)),
    Spec(
        "gunicorn_cert_reload_failures",
        "counter",
        "Reloads after which the new leaf was not served within verify_timeout.",
        ("target",),
    ),
    Spec(
        "gunicorn_cert_reload_history_error",
        "gauge",
        "1 while the target's reload history (--storage.path) can't be read or written; reloads wait a cooldown.",
        ("target",),
    ),
    Spec(
        "gunicorn_cert_exporter_build_info", "gauge", "Version of the exporter; always 1.", ("version", "pythonversion")
    ),
    Spec("gunicorn_cert_exporter_scan_duration_seconds", "gauge", "Duration of the last scan of this kind.", ("kind",)),
    Spec(
        "gunicorn_cert_exporter_last_scan_timestamp_seconds",
        "gauge",
        "When the last scan of this kind ended.",
        ("kind",),
    ),
    Spec(
        "gunicorn_cert_exporter_scan_coverage_ratio",
        "gauge",
        "Share of this kind's sources with a result of the last scan (the rest: scan_deadline or scan_failed).",
        ("kind",),
    ),
    Spec(
        "gunicorn_cert_exporter_config_last_reload_successful",
        "gauge",
        "1 if the last configuration (re)load succeeded, else 0.",
        (),
    ),
    Spec(
        "gunicorn_cert_exporter_config_last_reload_success_timestamp_seconds",
        "gauge",
        "When the configuration was last loaded successfully.",
        (),
    ),
    Spec(
        "gunicorn_cert_exporter_render_errors",
        "counter",
        "Renders of a scan kind's series that failed; that kind's series stay as last rendered, the others go on.",
        ("kind",),
    ),
    Spec(
        "gunicorn_cert_exporter_http_refused",
        "counter",
        "Connections the HTTP server closed, or requests it refused, to stay available to others, by reason.",
        ("reason",),
    ),
    Spec(
        "gunicorn_cert_exporter_config_reloads_coalesced",
        "counter",
        "Config reload requests (SIGHUP, POST /-/reload) folded into the next reload: at most one a second applies.",
        (),
    ),
    *ARI,
)

BY_NAME = {spec.name: spec for spec in CATALOGUE}
