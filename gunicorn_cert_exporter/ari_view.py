"""The ACME renewal window's findings on the status view's rows: overdue is WARNING, the CA asking is CRITICAL. Pure.

A finding belongs to the certificate (its fingerprint), so every row that shows that certificate carries it.
"""

from __future__ import annotations

from dataclasses import replace

from gunicorn_cert_exporter.bands import Band, worst
from gunicorn_cert_exporter.model import AriResult, RenewalAdvice
from gunicorn_cert_exporter.status_rows import CertRow, SourceRow

_BAND = {RenewalAdvice.OVERDUE: Band.WARNING, RenewalAdvice.REQUESTED: Band.CRITICAL}


def apply(sources: list[SourceRow], ari: tuple[AriResult, ...]) -> list[SourceRow]:
    """Raise each certificate row that an ARI finding concerns to its band, with the finding as its note."""
    findings: dict[str, AriResult] = {}
    for found in ari:
        if found.advice in _BAND:
            known = findings.get(found.fingerprint_sha256)
            if known is None or _BAND[found.advice].urgency < _BAND[known.advice].urgency:
                findings[found.fingerprint_sha256] = found
    if not findings:
        return sources
    out = []
    for row in sources:
        certs = tuple(_raised(cert, findings.get(cert.fingerprint_sha256)) for cert in row.certs)
        if certs == row.certs:
            out.append(row)
            continue
        band = row.band if row.error else worst([c.band for c in certs])
        ordered = tuple(sorted(certs, key=lambda c: (c.band.urgency, c.not_after, c.index)))
        out.append(replace(row, certs=ordered, band=band))
    return out


def _raised(cert: CertRow, found: AriResult | None) -> CertRow:
    if found is None:
        return cert
    note = f"{cert.note}; {found.note}" if cert.note else found.note
    return replace(cert, band=worst([cert.band, _BAND[found.advice]]), note=note)
