"""The families of the CRL files, revocation answers and ACME renewal windows (ARI), spliced into the catalogue."""

from __future__ import annotations

from gunicorn_cert_exporter.metrics.spec import ARI_LABELS, CRL, REVOKED, Spec

CRL_AND_REVOCATION: tuple[Spec, ...] = (
    Spec(
        "gunicorn_cert_file_crl_this_update_timestamp_seconds",
        "gauge",
        "When the CRL at this position of the file was issued (thisUpdate).",
        CRL,
    ),
    Spec(
        "gunicorn_cert_file_crl_next_update_timestamp_seconds",
        "gauge",
        "When the CRL at this position of the file must be replaced (nextUpdate); relying servers refuse after it.",
        CRL,
    ),
    Spec("gunicorn_cert_file_crl_revoked_entries", "gauge", "Number of certificates the CRL lists as revoked.", CRL),
    Spec(
        "gunicorn_cert_file_crl_info",
        "gauge",
        "Identity of a CRL in a file; always 1.",
        (*CRL, "issuer", "issuer_cn", "crl_number", "fingerprint_sha256", "signature_algorithm"),
    ),
    Spec(
        "gunicorn_cert_file_crl_verified",
        "gauge",
        "1 if the CRL's signature verifies against an issuer certificate the exporter sees, else 0.",
        CRL,
    ),
    Spec(
        "gunicorn_cert_file_crl_verify_error",
        "gauge",
        "1 while the CRL's signature can't be verified, with why (issuer_unknown, bad_signature).",
        (*CRL, "reason"),
    ),
    Spec(
        "gunicorn_cert_revoked",
        "gauge",
        "1 if a verified CRL or OCSP answer says revoked, 0 if one says good; absent when none answers.",
        REVOKED,
    ),
    Spec(
        "gunicorn_cert_revocation_time_seconds",
        "gauge",
        "When the certificate was revoked, as the CRL or OCSP responder says.",
        REVOKED,
    ),
    Spec(
        "gunicorn_cert_revocation_status",
        "gauge",
        "The revocation answer for a certificate, by method (crl_file, crl, ocsp), status and reason; always 1.",
        (*REVOKED, "method", "status", "reason"),
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
)

ARI: tuple[Spec, ...] = (
    Spec(
        "gunicorn_cert_ari_window_start_timestamp_seconds",
        "gauge",
        "Start of the renewal window the ACME server suggests for this certificate (ARI, RFC 9773).",
        ARI_LABELS,
    ),
    Spec(
        "gunicorn_cert_ari_window_end_timestamp_seconds",
        "gauge",
        "End of the renewal window the ACME server suggests for this certificate (ARI, RFC 9773).",
        ARI_LABELS,
    ),
    Spec(
        "gunicorn_cert_ari_info",
        "gauge",
        "The ACME directory asked and the CA's explanation URL of the window (empty if none); always 1.",
        (*ARI_LABELS, "directory", "explanation_url"),
    ),
    Spec(
        "gunicorn_cert_ari_renewal_overdue",
        "gauge",
        "1 while the ACME window has ended and this certificate is still on disk or served, else 0.",
        ARI_LABELS,
    ),
    Spec(
        "gunicorn_cert_ari_renewal_requested",
        "gauge",
        "1 while the CA asks for renewal now (an early window, or one moved earlier), else 0.",
        ARI_LABELS,
    ),
    Spec(
        "gunicorn_cert_ari_error",
        "gauge",
        "1 while the last ARI request for this certificate failed, with the reason.",
        (*ARI_LABELS, "reason"),
    ),
    Spec(
        "gunicorn_cert_ari_last_check_timestamp_seconds",
        "gauge",
        "When the ACME server was last asked about this certificate.",
        ARI_LABELS,
    ),
)
