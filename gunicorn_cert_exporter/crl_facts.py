"""What a certificate revocation list says: frozen values for sources/crl, the files scan, metrics and status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class Revoked(NamedTuple):
    """One entry of a CRL (a tuple: a CRL may hold 100,000 of them)."""

    serial: int
    revoked_at: float
    reason: str  # the CRL entry's reason code ("key_compromise"), or "" when it gives none


@dataclass(frozen=True, slots=True)
class CrlFacts:
    """What one certificate revocation list says, and whether an issuer the exporter sees signed it."""

    issuer: str  # RFC 4514
    issuer_cn: str
    this_update: float
    next_update: float | None
    number: str  # the CRL number extension, decimal; "" when absent
    revoked: tuple[Revoked, ...]  # sorted by serial
    fingerprint_sha256: str
    signature_algorithm: str
    der: bytes = field(default=b"", repr=False, compare=False)  # kept to verify the signature across files
    verified: bool | None = None  # None: no issuer certificate seen yet; True/False once one was tried
    verify_error: str = ""  # "issuer_unknown" or "bad_signature"
    entry: str = ""
