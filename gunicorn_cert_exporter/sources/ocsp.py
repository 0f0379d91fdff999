"""OCSP (RFC 6960) for one leaf: build the request, judge the response. Pure: bytes and facts in, an answer out.

The request names the leaf by CertID: hashes of its issuer's name (as the leaf encodes it) and of the issuer's
public key, and the serial. SHA-1 by default, the hash every responder reads; SHA-256 by option (RFC 9919). A
response counts only when signed by the issuer itself or by a responder certificate the issuer signed for
``id-kp-OCSPSigning``, when it answers for that very CertID and when its thisUpdate/nextUpdate window holds now.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from gunicorn_cert_exporter.model import CertFacts
from gunicorn_cert_exporter.sources import der
from gunicorn_cert_exporter.sources.signatures import signed_by

CONTENT_TYPE = "application/ocsp-request"
_HASHES: dict[str, type[hashes.SHA1 | hashes.SHA256]] = {"sha1": hashes.SHA1, "sha256": hashes.SHA256}
_SKEW = 300.0  # a responder's clock a few minutes ahead is not an error


@dataclass(frozen=True, slots=True)
class Answer:
    """A responder's verdict on one leaf, or why there is none (``error``: the responder URL's problem)."""

    status: str  # "good", "revoked" or "unknown"
    reason: str = ""  # revoked: the reason given ("" if none); unknown: why
    revoked_at: float | None = None
    error: str = ""  # parse_error, responder_error, bad_signature, cert_id_mismatch, stale, ...
    next_update: float | None = None


def _key_bits(spki_der: bytes) -> bytes:
    """Return the subjectPublicKey BIT STRING's bits (without its unused-bits octet): what issuerKeyHash hashes."""
    outer = der.expect(spki_der, 0, 0x30)
    algorithm = der.expect(spki_der, outer.start, 0x30)
    bits = der.expect(spki_der, algorithm.end, 0x03)
    return spki_der[bits.start + 1 : bits.end]


def cert_id(*, leaf: CertFacts, issuer: CertFacts, algorithm: str) -> tuple[bytes, bytes, int]:
    """Return (issuerNameHash, issuerKeyHash, serial) of a leaf's CertID."""
    name = hashlib.new(algorithm, leaf.issuer_name_der, usedforsecurity=False).digest()
    key = hashlib.new(algorithm, _key_bits(issuer.public_key_der), usedforsecurity=False).digest()
    return name, key, int(leaf.serial, 16)


def request(*, leaf: CertFacts, issuer: CertFacts, algorithm: str = "sha1") -> bytes:
    """Return the DER of an OCSP request for one leaf (no nonce: responders pre-sign, and caches answer)."""
    name, key, serial = cert_id(leaf=leaf, issuer=issuer, algorithm=algorithm)
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(name, key, serial, _HASHES[algorithm]())
    return builder.build().public_bytes(serialization.Encoding.DER)


def _key_id(spki_der: bytes) -> bytes:
    """Return a ResponderID byKey: SHA-1 of the key's bits, as RFC 6960 fixes it (an identifier, not a signature)."""
    return hashlib.sha1(_key_bits(spki_der), usedforsecurity=False).digest()


def _signer(response: ocsp.OCSPResponse, *, issuer: CertFacts) -> object | None:
    """Return the key that must have signed the response: the issuer's, or a delegated responder's it signed."""
    issuer_key = serialization.load_der_public_key(issuer.public_key_der)
    by_key, by_name = response.responder_key_hash, response.responder_name
    if by_key is not None and by_key == _key_id(issuer.public_key_der):
        return issuer_key
    if by_name is not None and by_name.rfc4514_string() == issuer.subject:
        return issuer_key
    for cert in response.certificates:
        named = (by_key is not None and by_key == _key_id(_spki(cert))) or cert.subject == by_name
        if named and _delegated(cert, issuer_key=issuer_key, issuer=issuer):
            return cert.public_key()
    return None


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _delegated(cert: x509.Certificate, *, issuer_key: object, issuer: CertFacts) -> bool:
    """Tell whether the issuer signed ``cert`` for OCSP signing (id-kp-OCSPSigning in its extended key usage)."""
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        return False
    if ExtendedKeyUsageOID.OCSP_SIGNING not in usage or cert.issuer.rfc4514_string() != issuer.subject:
        return False
    return signed_by(issuer_key, cert.signature, cert.tbs_certificate_bytes, cert.signature_hash_algorithm)


def judge(body: bytes, *, leaf: CertFacts, issuer: CertFacts, algorithm: str = "sha1", now: float) -> Answer:
    """Read a responder's answer for one leaf: verified, for its CertID, within its window."""
    try:
        response = ocsp.load_der_ocsp_response(body)
    except ValueError:
        return Answer("unknown", "parse_error", error="parse_error")
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        return Answer("unknown", "responder_error", error="responder_error")
    try:
        signer = _signer(response, issuer=issuer)
        signed = signer is not None and signed_by(
            signer, response.signature, response.tbs_response_bytes, response.signature_hash_algorithm
        )
        wanted = cert_id(leaf=leaf, issuer=issuer, algorithm=algorithm)
        single = next(
            (s for s in response.responses if (s.issuer_name_hash, s.issuer_key_hash, s.serial_number) == wanted),
            None,
        )
    except (ValueError, TypeError, UnsupportedAlgorithm, der.DerError):
        return Answer("unknown", "parse_error", error="parse_error")
    if not signed:
        return Answer("unknown", "bad_signature", error="bad_signature")
    if single is None:
        return Answer("unknown", "cert_id_mismatch", error="cert_id_mismatch")
    return _window(single, now=now)


def _window(single: ocsp.OCSPSingleResponse, *, now: float) -> Answer:
    next_update = single.next_update_utc.timestamp() if single.next_update_utc is not None else None
    if single.this_update_utc.timestamp() > now + _SKEW:
        return Answer("unknown", "not_yet_valid", error="not_yet_valid", next_update=next_update)
    if next_update is not None and next_update <= now:
        return Answer("unknown", "stale", error="stale", next_update=next_update)
    if single.certificate_status is ocsp.OCSPCertStatus.GOOD:
        return Answer("good", next_update=next_update)
    if single.certificate_status is ocsp.OCSPCertStatus.REVOKED:
        reason = single.revocation_reason.name if single.revocation_reason is not None else ""
        revoked_at = single.revocation_time_utc.timestamp() if single.revocation_time_utc is not None else None
        return Answer("revoked", reason, revoked_at, next_update=next_update)
    return Answer("unknown", "unknown_to_responder", next_update=next_update)
