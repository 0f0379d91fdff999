"""The metric catalogue: every family the exporter emits, with its type, help and labels."""

from __future__ import annotations

from gunicorn_cert_exporter.metrics.catalogue_more import ARI, CRL_AND_REVOCATION
from gunicorn_cert_exporter.metrics.spec import ADDR, CERT, CHAIN, FILE, Spec

CATALOGUE: tuple[Spec, ...] = (
    Spec(
        "gunicorn_cert_file_not_after_timestamp_seconds",
        "gauge",
        "When the certificate at this position of the file expires (notAfter).",
        FILE,
    ),
    Spec(
        "gunicorn_cert_file_not_before_timestamp_seconds",
        "gauge",
        "When the certificate at this position of the file becomes valid (notBefore).",
        FILE,
    ),
    Spec("gunicorn_cert_file_info", "gauge", "Identity of a certificate in a file; always 1.", (*FILE, *CERT)),
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
    *CRL_AND_REVOCATION,
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
        ADDR,
    ),
    Spec("gunicorn_cert_endpoint_error", "gauge", "1 while the address fails, with the reason.", (*ADDR, "reason")),
    Spec(
        "gunicorn_cert_endpoint_verified",
        "gauge",
        "1 if the served chain verified against the trust store and the server name.",
        ADDR,
    ),
    Spec(
        "gunicorn_cert_endpoint_verify_error",
        "gauge",
        "1 while the served chain fails verification, with why.",
        (*ADDR, "reason"),
    ),
    Spec(
        "gunicorn_cert_endpoint_tls_info",
        "gauge",
        "Negotiated TLS version and cipher; always 1.",
        (*ADDR, "version", "cipher"),
    ),
    Spec(
        "gunicorn_cert_endpoint_handshake_duration_seconds",
        "gauge",
        "Time to connect and complete the TLS handshake.",
        ADDR,
    ),
    Spec(
        "gunicorn_cert_endpoint_not_after_timestamp_seconds",
        "gauge",
        "When the served certificate at this chain position expires (index 0 is the leaf).",
        CHAIN,
    ),
    Spec(
        "gunicorn_cert_endpoint_not_before_timestamp_seconds",
        "gauge",
        "When the served certificate at this chain position becomes valid.",
        CHAIN,
    ),
    Spec("gunicorn_cert_endpoint_info", "gauge", "Identity of a served certificate; always 1.", (*CHAIN, *CERT)),
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
        "Reloads not confirmed within verify_timeout, or not sent (every reason; see ..._by_reason_total).",
        ("target",),
    ),
    Spec(
        "gunicorn_cert_reload_failures_by_reason",
        "counter",
        "Reloads not confirmed, by reason: signal_failed, not_served, workers_missing or unhealthy.",
        ("target", "reason"),
    ),
    Spec(
        "gunicorn_cert_worker_can_read",
        "gauge",
        "1 if the master's workers (their uid, gid and groups) can read this file (cert, key, ca_certs), else 0.",
        ("target", "file"),
    ),
    Spec(
        "gunicorn_cert_key_file_exposed",
        "gauge",
        "1 if key_file (after symlinks) is readable or writable by others, or writable by its group, else 0.",
        ("target",),
    ),
    Spec(
        "gunicorn_cert_reload_next_window_timestamp_seconds",
        "gauge",
        "When reload.window next opens (the scan time while it is open).",
        ("target",),
    ),
    Spec(
        "gunicorn_cert_reload_history_error",
        "gauge",
        "1 while the target's reload history (--storage.path) can't be read or written; reloads wait a cooldown.",
        ("target",),
    ),
    Spec(
        "gunicorn_cert_target_info",
        "gauge",
        "A Gunicorn target: where it comes from (config or discovery), its files and worker class; always 1.",
        ("target", "source", "cert_file", "key_file", "worker_class"),
    ),
    Spec(
        "gunicorn_cert_discovered_masters",
        "gauge",
        "Gunicorn masters the last discovery pass found on this host (targets or not); absent while discovery is off.",
        (),
    ),
    Spec(
        "gunicorn_cert_discovery_error",
        "gauge",
        "1 for a Gunicorn master that is no target because what it was told can't be read, with the reason.",
        ("target", "reason"),
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
