"""Bytes to certificate and key facts: PEM bundles, DER and PKCS#12. Pure: no I/O, no clock."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import types
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from gunicorn_cert_exporter.model import CertFacts, FileReason, KeyFacts, Parsed
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
_DECODE_ERRORS = (ValueError, KeyError, TypeError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType)
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
    subject, issuer = _name(cert, "subject"), _name(cert, "issuer")
    sans, is_ca, ca_issuers = _extensions(cert)
    return CertFacts(
        not_before=cert.not_valid_before_utc.timestamp(),
        not_after=cert.not_valid_after_utc.timestamp(),
        fingerprint_sha256=fingerprint or cert.fingerprint(_SHA256).hex(),
        serial=format(cert.serial_number, "x"),
        subject_cn=_common_name(subject),
        issuer_cn=_common_name(issuer),
        subject=_rfc4514(subject),
        issuer=_rfc4514(issuer),
        sans=sans,
        key_type=key_type,
        key_bits=key_bits,
        spki_sha256=key_info.spki_sha256(public_key) if public_key is not None else "",
        signature_algorithm=_signature_algorithm(cert),
        is_ca=is_ca,
        self_signed=subject is not None and subject == issuer and _signed_by_itself(cert),
        ca_issuers=ca_issuers,
        authority_key_id=_authority_key_id(cert),
        public_key_der=key_info.spki(public_key) if public_key is not None and (is_ca or subject == issuer) else b"",
        **_revocation_pointers(cert),
    )


def _revocation_pointers(cert: x509.Certificate) -> dict[str, Any]:
    """Read where revocation is published: CRL Distribution Points, AIA OCSP, and the issuer name's DER."""
    crl_urls: list[str] = []
    ocsp_urls: list[str] = []
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        crl_urls = [
            str(name.value)
            for point in points
            for name in point.full_name or ()
            if isinstance(name, x509.UniformResourceIdentifier)
        ]
    except (x509.ExtensionNotFound, *_DECODE_ERRORS):
        pass
    try:
        access = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        ocsp_urls = [
            str(d.access_location.value)
            for d in access
            if d.access_method == x509.oid.AuthorityInformationAccessOID.OCSP
            and isinstance(d.access_location, x509.UniformResourceIdentifier)
        ]
    except (x509.ExtensionNotFound, *_DECODE_ERRORS):
        pass
    try:
        issuer_der = cert.issuer.public_bytes()
    except _DECODE_ERRORS:
        issuer_der = b""
    return {"crl_urls": tuple(crl_urls), "ocsp_urls": tuple(ocsp_urls), "issuer_name_der": issuer_der}


def _authority_key_id(cert: x509.Certificate) -> str:
    """Return the AKI keyIdentifier in hex (ARI's certID needs it), or "" when the certificate has none."""
    try:
        value = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except (x509.ExtensionNotFound, *_DECODE_ERRORS):
        return ""
    return value.key_identifier.hex() if value.key_identifier else ""


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


def _name(cert: x509.Certificate, which: Literal["subject", "issuer"]) -> x509.Name | None:
    try:  # names are decoded lazily; an unknown string type raises here, not at load
        return cert.subject if which == "subject" else cert.issuer
    except _DECODE_ERRORS:
        return None


def _common_name(name: x509.Name | None) -> str:
    if name is None:
        return ""
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not values:
        return ""
    value = values[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _rfc4514(name: x509.Name | None) -> str:
    if name is None:
        return ""
    try:
        return name.rfc4514_string()
    except _DECODE_ERRORS:
        return ""


def _extensions(cert: x509.Certificate) -> tuple[tuple[str, ...], bool, tuple[str, ...]]:
    """Read SANs, CA flag and AIA caIssuers in one pass over the extensions."""
    sans: tuple[str, ...] = ()
    is_ca = False
    ca_issuers: tuple[str, ...] = ()
    try:
        extensions = list(cert.extensions)
    except _DECODE_ERRORS:  # duplicate or malformed extensions: report the rest of the certificate
        return sans, is_ca, ca_issuers
    for extension in extensions:
        value = extension.value
        if isinstance(value, x509.SubjectAlternativeName):
            names = [f"DNS:{n}" for n in value.get_values_for_type(x509.DNSName)]
            names.extend(f"IP:{ip}" for ip in value.get_values_for_type(x509.IPAddress))
            names.extend(f"email:{e}" for e in value.get_values_for_type(x509.RFC822Name))
            names.extend(f"URI:{u}" for u in value.get_values_for_type(x509.UniformResourceIdentifier))
            sans = tuple(names)
        elif isinstance(value, x509.BasicConstraints):
            is_ca = bool(value.ca)
        elif isinstance(value, x509.AuthorityInformationAccess):
            ca_issuers = tuple(
                str(d.access_location.value)
                for d in value
                if d.access_method == x509.oid.AuthorityInformationAccessOID.CA_ISSUERS
                and isinstance(d.access_location, x509.UniformResourceIdentifier)
            )
    return sans, is_ca, ca_issuers


def _signature_algorithm(cert: x509.Certificate) -> str:
    name = getattr(cert.signature_algorithm_oid, "_name", "")
    return name if isinstance(name, str) and name else cert.signature_algorithm_oid.dotted_string


def _signed_by_itself(cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True
