"""What a certificate's names and extensions say, read defensively: a field that does not decode is left empty."""

from __future__ import annotations

from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.oid import NameOID

DECODE_ERRORS = (ValueError, KeyError, TypeError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType)
"""What cryptography raises while decoding a name or an extension it parsed lazily."""


def revocation_pointers(cert: x509.Certificate) -> dict[str, Any]:
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
    except (x509.ExtensionNotFound, *DECODE_ERRORS):
        pass
    try:
        access = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        ocsp_urls = [
            str(d.access_location.value)
            for d in access
            if d.access_method == x509.oid.AuthorityInformationAccessOID.OCSP
            and isinstance(d.access_location, x509.UniformResourceIdentifier)
        ]
    except (x509.ExtensionNotFound, *DECODE_ERRORS):
        pass
    try:
        issuer_der = cert.issuer.public_bytes()
    except DECODE_ERRORS:
        issuer_der = b""
    return {"crl_urls": tuple(crl_urls), "ocsp_urls": tuple(ocsp_urls), "issuer_name_der": issuer_der}


def authority_key_id(cert: x509.Certificate) -> str:
    """Return the AKI keyIdentifier in hex (ARI's certID needs it), or "" when the certificate has none."""
    try:
        value = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except (x509.ExtensionNotFound, *DECODE_ERRORS):
        return ""
    return value.key_identifier.hex() if value.key_identifier else ""


def name(cert: x509.Certificate, which: Literal["subject", "issuer"]) -> x509.Name | None:
    try:  # names are decoded lazily; an unknown string type raises here, not at load
        return cert.subject if which == "subject" else cert.issuer
    except DECODE_ERRORS:
        return None


def common_name(name: x509.Name | None) -> str:
    if name is None:
        return ""
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not values:
        return ""
    value = values[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def rfc4514(name: x509.Name | None) -> str:
    if name is None:
        return ""
    try:
        return name.rfc4514_string()
    except DECODE_ERRORS:
        return ""


def extensions(cert: x509.Certificate) -> tuple[tuple[str, ...], bool, tuple[str, ...]]:
    """Read SANs, CA flag and AIA caIssuers in one pass over the extensions."""
    sans: tuple[str, ...] = ()
    is_ca = False
    ca_issuers: tuple[str, ...] = ()
    try:
        extensions = list(cert.extensions)
    except DECODE_ERRORS:  # duplicate or malformed extensions: report the rest of the certificate
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


def signature_algorithm(cert: x509.Certificate) -> str:
    name = getattr(cert.signature_algorithm_oid, "_name", "")
    return name if isinstance(name, str) and name else cert.signature_algorithm_oid.dotted_string


def signed_by_itself(cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True
