"""Served leaf against the file's leaf per address, and key against certificate: the comparisons a target needs."""

from __future__ import annotations

from collections.abc import Sequence

from gunicorn_cert_exporter.model import AddressDrift, CertFacts, EndpointResult, FileResult, clamp_to_now


def key_match(cert: FileResult, key: FileResult) -> bool | None:
    """Tell whether key_file holds the private key of cert_file's leaf; None if either can't be read."""
    if not cert.certs or not key.keys:
        return None
    spki = key.keys[0].spki_sha256
    return None if spki is None else spki == cert.certs[0].spki_sha256


def compare(
    *, endpoint: EndpointResult, file_leaf: CertFacts | None, previous: Sequence[AddressDrift], now: float
) -> tuple[AddressDrift, ...]:
    """Compare the leaf served on each address with the file's leaf; keep when each drift began."""
    before = {d.address: d for d in previous}
    out = []
    for result in endpoint.addresses:
        served = result.leaf
        mismatch = (
            served is not None and file_leaf is not None and served.fingerprint_sha256 != file_leaf.fingerprint_sha256
        )
        if not mismatch:
            out.append(AddressDrift(address=result.address, mismatch=False))
            continue
        old = before.get(result.address)
        kept = clamp_to_now(old.since, now=now) if old is not None and old.mismatch else None
        since = kept if kept is not None else now
        out.append(AddressDrift(address=result.address, mismatch=True, since=since))
    return tuple(out)
