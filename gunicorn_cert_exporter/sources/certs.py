"""Bytes to certificate and key facts: PEM bundles, DER and PKCS#12. Pure: no I/O, no clock."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import types
from cryptography.hazmat.primitives.serialization import pkcs12

from gunicorn_cert_exporter.model import CertFacts, KeyFacts, Parsed
from gunicorn_cert_exporter.reasons import FileReason
from gunicorn_cert_exporter.sources import cert_fields as fields
from gunicorn_cert_exporter.sources import der as tlv
from gunicorn_cert_exporter.sources import keys as key_info
from gunicorn_cert_exporter.sources import pfx

Format = Literal["auto", "pem", "der", "pkcs12", "jks", "kubeconfig"]

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----\r?\n(.*?)-----END \1-----", re.DOTALL)
_CERT_LABELS = frozenset({b"CERTIFICATE", b"X509 CERTIFICATE"})
_TRUSTED_LABEL = b"TRUSTED CERTIFICATE"  # openssl x509 -trustout: the certificate, then its trust settings
_KEY_LABELS = frozenset({b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY", b"DSA PRIVATE KEY"})
_ENCRYPTED_KEY_LABEL = b"ENCRYPTED PRIVATE KEY"
_PKCS12_SUFFIXES = (".p12", ".pfx")
_SHA256 = hashes.SHA256()
# What cryptography raises for malformed or unsupported input (InvalidVersion is not a ValueError).
_LOAD_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion)
LOAD_ERRORS = _LOAD_ERRORS  # what der_facts raises for bytes that are no certificate it can read
# What decoding a loaded certificate's names and extensions may raise (cryptography decodes them lazily).
_RIGHT_PASSWORD_UNREADABLE = "PKCS#12 MAC verifies with this password, but cryptography can't read the content"  # noqa: S105  (a message)
_ASN1_PROBLEM = re.compile(r"ParseError \{ kind: (\w+).*?location: \[([^\]]*)\]")


def parse(
    data: bytes,
    *,
    fmt: Format = "auto",
    password: bytes | None = None,
    name: str = "",
    cache: FactsCache | None = None,
) -> Parsed:
    """Parse the content of one file into certificate and key facts, or a reason it can't be."""
    if not data.strip():
        return Parsed(error=FileReason.EMPTY)
    if fmt == "pem" or (fmt == "auto" and b"-----BEGIN " in data):
        return _parse_pem(data, cache)
    if fmt == "der":
        return _parse_der(data, cache)
    if fmt == "pkcs12" or name.lower().endswith(_PKCS12_SUFFIXES):
        if not tlv.complete(data):
            return Parsed(error=FileReason.PARSE_ERROR, detail="truncated or not DER")
        return _parse_pkcs12(data, password, cache)
    der = _parse_der(data, cache)
    if der.error is None or not _looks_like_pkcs12(data) or not tlv.complete(data):
        return der
    return _parse_pkcs12(data, password, cache)


def _looks_like_pkcs12(data: bytes) -> bool:
    """Tell whether DER data opens like a PFX: SEQUENCE { INTEGER 3, ... }."""
    try:
        version = tlv.expect(data, tlv.expect(data, 0, tlv.SEQUENCE).start, tlv.INTEGER)
    except tlv.DerError:
        return False
    return data[version.start : version.end] == b"\x03"


class FactsCache:
    """Facts are a pure function of the DER bytes: remember the latest ones by SHA-256 of the DER.

    Real trees repeat certificates (every fullchain.pem carries the same intermediates, trust bundles the same
    roots), and a self-signed root costs a signature check; bounded, so memory stays flat.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._facts: OrderedDict[bytes, CertFacts] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, der: bytes) -> CertFacts:
        """Describe the certificate in ``der``; raises ValueError (or another load error) if it isn't one."""
        digest = hashlib.sha256(der).digest()
        with self._lock:
            found = self._facts.get(digest)
            if found is not None:
                self._facts.move_to_end(digest)
                return found
        facts = cert_facts(x509.load_der_x509_certificate(der), fingerprint=digest.hex())
        with self._lock:
            self._facts[digest] = facts
            if len(self._facts) > self._size:
                self._facts.popitem(last=False)
        return facts


def der_facts(der: bytes, cache: FactsCache | None = None) -> CertFacts:
    """Describe the certificate in ``der``, through ``cache`` if given; raises a load error if it isn't one."""
    if cache is not None:
        return cache.get(der)
    return cert_facts(x509.load_der_x509_certificate(der))


def cert_facts(cert: x509.Certificate, *, fingerprint: str | None = None) -> CertFacts:
    """Describe one certificate; never raises for a certificate cryptography could load."""
    try:
        public_key: types.PublicKeyTypes | None = cert.public_key()
    except _LOAD_ERRORS:  # a curve or algorithm this build can't load: still report the certificate
        public_key = None
    key_type, key_bits = key_info.key_shape(public_key) if public_key is not None else ("unknown", 0)
    subject, issuer = fields.name(cert, "subject"), fields.name(cert, "issuer")
    sans, is_ca, ca_issuers = fields.extensions(cert)
    return CertFacts(
        not_before=cert.not_valid_before_utc.timestamp(),
        not_after=cert.not_valid_after_utc.timestamp(),
        fingerprint_sha256=fingerprint or cert.fingerprint(_SHA256).hex(),
        serial=format(cert.serial_number, "x"),
        subject_cn=fields.common_name(subject),
        issuer_cn=fields.common_name(issuer),
        subject=fields.rfc4514(subject),
        issuer=fields.rfc4514(issuer),
        sans=sans,
        key_type=key_type,
        key_bits=key_bits,
        spki_sha256=key_info.spki_sha256(public_key) if public_key is not None else "",
        signature_algorithm=fields.signature_algorithm(cert),
        is_ca=is_ca,
        self_signed=subject is not None and subject == issuer and fields.signed_by_itself(cert),
        ca_issuers=ca_issuers,
        authority_key_id=fields.authority_key_id(cert),
        public_key_der=key_info.spki(public_key) if public_key is not None and (is_ca or subject == issuer) else b"",
        **fields.revocation_pointers(cert),
    )


def der_chain_facts(chain: Iterable[bytes], cache: FactsCache | None = None) -> tuple[CertFacts, ...]:
    """Describe a served chain given as DER blobs; a blob that does not parse ends the chain."""
    facts: list[CertFacts] = []
    for der in chain:
        try:
            facts.append(der_facts(der, cache))
        except _LOAD_ERRORS:
            break
    return tuple(facts)


def _parse_pem(data: bytes, cache: FactsCache | None) -> Parsed:
    certs: list[CertFacts] = []
    keys: list[KeyFacts] = []
    broken: list[str] = []
    for number, match in enumerate(_PEM_BLOCK.finditer(data), start=1):
        label, body = match.group(1), match.group(2)
        where = f"PEM block {number} ({label.decode()})"
        if label in _CERT_LABELS or label == _TRUSTED_LABEL:
            try:
                der = base64.b64decode(b"".join(body.split()), validate=True)
            except binascii.Error as exc:
                broken.append(f"{where}: not base64 ({exc})")
                continue
            if label == _TRUSTED_LABEL:
                der = tlv.first(der) or der
            try:
                certs.append(der_facts(der, cache))
            except _LOAD_ERRORS as exc:
                broken.append(f"{where}: {why(exc)}")
        elif label in _KEY_LABELS:
            key = _pem_key(match.group(0))
            if isinstance(key, str):
                broken.append(f"{where}: {key}")
            else:
                keys.append(key)
        elif label == _ENCRYPTED_KEY_LABEL:
            keys.append(KeyFacts(key_type="unknown", key_bits=0, spki_sha256=None, encrypted=True))
    if broken:
        more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
        return Parsed(certs=tuple(certs), keys=tuple(keys), error=FileReason.PARSE_ERROR, detail=broken[0] + more)
    if not certs and not keys:
        reason = FileReason.NO_CERTIFICATE if b"-----END " in data else FileReason.PARSE_ERROR
        return Parsed(error=reason, detail="no certificate or private key in PEM data")
    return Parsed(certs=tuple(certs), keys=tuple(keys))


def _wrong_password(exc: ValueError) -> bool:
    """Tell cryptography's "wrong password (or MAC)" from content it could decrypt but not parse."""
    return "password" in str(exc).lower()


def why(exc: BaseException) -> str:
    """Say in a few words why cryptography rejected some bytes (e.g. which ASN.1 field broke strict DER)."""
    text = str(exc)
    found = _ASN1_PROBLEM.search(text)
    if found:
        location = found.group(2).replace('"', "").replace(", ", ".")
        return f"not valid DER: {found.group(1)} at {location or 'the top level'}"
    return text[:200] or type(exc).__name__


def _pem_key(block: bytes) -> KeyFacts | str:
    """Describe a PEM private key, or say why it can't be read."""
    try:
        # The exporter only fingerprints the key: RSA validation (~50 ms a key) buys nothing here.
        key = serialization.load_pem_private_key(block, password=None, unsafe_skip_rsa_key_validation=True)
    except TypeError:  # encrypted in the legacy OpenSSL way (Proc-Type header)
        return KeyFacts(key_type="unknown", key_bits=0, spki_sha256=None, encrypted=True)
    except _LOAD_ERRORS as exc:
        return why(exc)
    return key_info.key_facts(key)


def _parse_der(data: bytes, cache: FactsCache | None) -> Parsed:
    first = tlv.first(data)
    try:
        return Parsed(certs=(der_facts(data, cache),))
    except _LOAD_ERRORS as exc:
        problem = why(exc)
    if first is not None and len(first) < len(data):
        try:  # trailing bytes (a newline, zero padding): openssl reads the first element, so do we
            return Parsed(certs=(der_facts(first, cache),))
        except _LOAD_ERRORS:
            pass
    try:
        key = serialization.load_der_private_key(data, password=None, unsafe_skip_rsa_key_validation=True)
    except _LOAD_ERRORS:
        return Parsed(error=FileReason.PARSE_ERROR, detail=f"not a DER certificate ({problem}) or private key")
    return Parsed(keys=(key_info.key_facts(key),))


def _parse_pkcs12(data: bytes, password: bytes | None, cache: FactsCache | None) -> Parsed:
    try:
        bundle = pkcs12.load_pkcs12(data, password)
    except ValueError as exc:
        if not _wrong_password(exc):
            return Parsed(error=FileReason.PARSE_ERROR, detail=f"PKCS#12 content: {why(exc)}")
        if password is not None:
            if pfx.mac_verifies(data, password):
                return Parsed(error=FileReason.UNSUPPORTED, detail=_RIGHT_PASSWORD_UNREADABLE)
            return Parsed(error=FileReason.BAD_PASSWORD, detail="PKCS#12 MAC or decryption failed with this password")
        try:  # many tools write PKCS#12 with an empty password rather than none
            bundle = pkcs12.load_pkcs12(data, b"")
        except ValueError as retry:
            if not _wrong_password(retry):
                return Parsed(error=FileReason.PARSE_ERROR, detail=f"PKCS#12 content: {why(retry)}")
            if pfx.mac_verifies(data, None) or pfx.mac_verifies(data, b""):
                return Parsed(error=FileReason.UNSUPPORTED, detail=_RIGHT_PASSWORD_UNREADABLE)
            return Parsed(error=FileReason.PASSWORD_REQUIRED, detail="PKCS#12 needs a password")
    except (TypeError, UnsupportedAlgorithm) as exc:
        return Parsed(error=FileReason.UNSUPPORTED, detail=f"PKCS#12 content this build can't read: {why(exc)}")
    bags = [bundle.cert] if bundle.cert else []
    bags.extend(bundle.additional_certs)
    keys = (key_info.key_facts(bundle.key),) if bundle.key is not None else ()
    if not bags and not keys:
        return Parsed(error=FileReason.NO_CERTIFICATE, detail="PKCS#12 holds no certificate or key")
    # keytool names every entry by its bag's friendlyName: the alias, as in a JKS store.
    names = tuple(f"alias:{b.friendly_name.decode('utf-8', 'replace')}" if b.friendly_name else "" for b in bags)
    facts = tuple(der_facts(b.certificate.public_bytes(serialization.Encoding.DER), cache) for b in bags)
    return Parsed(certs=facts, keys=keys, entries=names if any(names) else ())
