"""What parsing a file found: besides certificates and keys, CRLs and the entries (kubeconfig, keystore) that failed.

Frozen values for sources/crl, the files scan, metrics and status; model.py re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # model imports this module; the enum is needed for annotations only
    from gunicorn_cert_exporter.model import CertFacts, KeyFacts
    from gunicorn_cert_exporter.reasons import FileReason


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


@dataclass(frozen=True, slots=True)
class EntryProblem:
    """Why one entry of a kubeconfig or keystore gave no certificate; the file's other entries still count."""

    entry: str
    reason: FileReason
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Parsed:
    """The outcome of parsing the bytes of one file."""

    certs: tuple[CertFacts, ...] = ()
    keys: tuple[KeyFacts, ...] = ()
    error: FileReason | None = None
    detail: str = ""
    entries: tuple[str, ...] = ()  # beside ``certs``: where each came from ("user:admin", "alias:tomcat"), or ()
    entry_errors: tuple[EntryProblem, ...] = ()
    crls: tuple[CrlFacts, ...] = ()
    secret_keys: int = 0  # JCEKS secret-key entries: counted, never read
    followed: tuple[str, ...] = ()  # files a kubeconfig referenced: read again on every scan
