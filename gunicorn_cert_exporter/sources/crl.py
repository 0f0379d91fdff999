"""Certificate revocation lists: parse, verify against an issuer, look a serial up. Pure: bytes and facts in.

The files scan reads CRL files through this module, and the revocation work (CRLs fetched from distribution
points) reuses the same three steps: ``parse`` -> ``verify`` -> ``lookup``.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import contextlib
import hashlib
import re
from collections.abc import Iterable
from dataclasses import replace
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from gunicorn_cert_exporter.file_parts import CrlFacts, Revoked
from gunicorn_cert_exporter.model import CertFacts
from gunicorn_cert_exporter.sources import der

PEM_LABEL = b"X509 CRL"
_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----\r?\n(.*?)-----END X509 CRL-----", re.DOTALL)
_TIME_TAGS = (0x17, 0x18)  # UTCTime, GeneralizedTime
_LOAD_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion)
_VERIFY_KEYS = (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, dsa.DSAPublicKey, ed25519.Ed25519PublicKey,
                ed448.Ed448PublicKey)  # fmt: skip
VerifyError = Literal["issuer_unknown", "bad_signature"]


def looks_like_der_crl(data: bytes) -> bool:
    """Tell a DER CRL from a DER certificate: its TBS has [version] algorithm, issuer, then a time (thisUpdate)."""
    try:
        tbs = der.expect(data, der.expect(data, 0, der.SEQUENCE).start, der.SEQUENCE)
        pos = tbs.start
        head = der.element(data, pos)
        if head.tag == der.INTEGER:  # v2 CRLs carry a version; certificates carry [0] version, then a serial
            pos = head.end
        pos = der.expect(data, pos, der.SEQUENCE).end  # signature algorithm
        pos = der.expect(data, pos, der.SEQUENCE).end  # issuer
        return der.element(data, pos).tag in _TIME_TAGS
    except der.DerError:
        return False


def pem_blocks(data: bytes) -> tuple[list[bytes], list[str]]:
    """Return the DER of every ``X509 CRL`` PEM block, and a problem for each block that is not base64."""
    found, problems = [], []
    for number, match in enumerate(_PEM_CRL.finditer(data), start=1):
        try:
            found.append(base64.b64decode(b"".join(match.group(1).split()), validate=True))
        except binascii.Error as exc:
            problems.append(f"CRL PEM block {number}: not base64 ({exc})")
    return found, problems


def parse(data: bytes, *, entry: str = "", entries: bool = True) -> CrlFacts | str:
    """Describe one DER CRL, or say why it isn't one (delta CRLs are refused: they never stand alone).

    ``entries=False`` leaves ``revoked`` empty: a fetched CRL's serials are indexed by crl_index.py instead.
    """
    try:
        crl = x509.load_der_x509_crl(data)
        revoked = sorted((_revoked(r) for r in crl), key=lambda r: r.serial) if entries else []
        number = _number(crl)
        delta = _has(crl, x509.DeltaCRLIndicator)
        issuer = crl.issuer
        this_update = crl.last_update_utc.timestamp()
        next_update = crl.next_update_utc.timestamp() if crl.next_update_utc is not None else None
        algorithm = getattr(crl.signature_algorithm_oid, "_name", "") or crl.signature_algorithm_oid.dotted_string
    except (*_LOAD_ERRORS, KeyError, x509.DuplicateExtension) as exc:
        return f"not a DER CRL ({str(exc)[:160] or type(exc).__name__})"
    if delta:
        return "a delta CRL (it only lists changes to a base CRL): unsupported"
    names = issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    common = names[0].value if names else ""
    return CrlFacts(
        issuer=issuer.rfc4514_string(),
        issuer_cn=common if isinstance(common, str) else common.decode("utf-8", "replace"),
        this_update=this_update,
        next_update=next_update,
        number="" if number is None else str(number),
        revoked=tuple(revoked),
        fingerprint_sha256=hashlib.sha256(data).hexdigest(),
        signature_algorithm=algorithm,
        der=data,
        entry=entry,
    )


def _number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None


def _has(crl: x509.CertificateRevocationList, kind: type[x509.ExtensionType]) -> bool:
    try:
        crl.extensions.get_extension_for_class(kind)
    except x509.ExtensionNotFound:
        return False
    return True


def _revoked(entry: x509.RevokedCertificate) -> Revoked:
    reason = ""
    with contextlib.suppress(x509.ExtensionNotFound):
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.name
    return Revoked(entry.serial_number, entry.revocation_date_utc.timestamp(), reason)


def verify(crl: CrlFacts, issuers: Iterable[CertFacts]) -> CrlFacts:
    """Return ``crl`` marked verified by the first certificate named as its issuer whose key checks its signature."""
    candidates = [c for c in issuers if c.subject == crl.issuer and c.public_key_der]
    if not candidates:
        return _marked(crl, verified=None, error="issuer_unknown")
    loaded = x509.load_der_x509_crl(crl.der)
    for candidate in candidates:
        try:
            key = serialization.load_der_public_key(candidate.public_key_der)
            if isinstance(key, _VERIFY_KEYS) and loaded.is_signature_valid(key):
                return _marked(crl, verified=True, error="")
        except _LOAD_ERRORS:
            continue
    return _marked(crl, verified=False, error="bad_signature")


def _marked(crl: CrlFacts, *, verified: bool | None, error: str) -> CrlFacts:
    if crl.verified is verified and crl.verify_error == error:
        return crl
    return replace(crl, verified=verified, verify_error=error)


def lookup(crl: CrlFacts, serial: int) -> Revoked | None:
    """Find ``serial`` in the CRL's sorted entries (bisect: 100,000 entries cost 17 comparisons)."""
    at = bisect.bisect_left(crl.revoked, serial, key=lambda r: r.serial)
    if at < len(crl.revoked) and crl.revoked[at].serial == serial:
        return crl.revoked[at]
    return None


def stale(crl: CrlFacts, *, now: float) -> bool:
    """Tell whether the CRL's nextUpdate has passed (relying servers refuse clients from then on)."""
    return crl.next_update is not None and crl.next_update <= now


def renewal_due(crl: CrlFacts, *, now: float) -> bool:
    """Tell whether less than a quarter of the CRL's own thisUpdate -> nextUpdate window remains."""
    if crl.next_update is None:
        return False
    window = crl.next_update - crl.this_update
    return crl.next_update - now < window / 4
