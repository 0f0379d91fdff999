"""A CRL fetched from a distribution point: read it (DER, PEM accepted), refuse what it can't stand for. Pure.

On top of ``crl.parse``: a delta or indirect CRL, or one limited to some reasons, CA or attribute certificates, is
``unsupported`` (never misread as complete); a CRL whose Issuing Distribution Point names URLs must name the one
it came from (Let's Encrypt shards its CRLs: a shard served at the wrong URL would say "good" for leaves it
never covered).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from gunicorn_cert_exporter.file_parts import CrlFacts
from gunicorn_cert_exporter.model import CertFacts
from gunicorn_cert_exporter.sources import crl, crl_index, der
from gunicorn_cert_exporter.sources.signatures import signed_by

UNSUPPORTED = "unsupported"
PARSE_ERROR = "parse_error"
IDP_MISMATCH = "idp_mismatch"


@dataclass(frozen=True, slots=True)
class Published:
    """A CRL read from a distribution point: what it says of itself (not yet verified) and its serials."""

    facts: CrlFacts  # ``revoked`` left empty: ``index`` answers lookups
    index: crl_index.SerialIndex


def read(body: bytes, *, url: str) -> Published | str:
    """Return the CRL served at ``url`` (not yet verified), or the reason it can't be used."""
    data = body
    if b"-----BEGIN X509 CRL-----" in body[:4096]:
        blocks, _ = crl.pem_blocks(body)
        if not blocks:
            return PARSE_ERROR
        data = blocks[0]
    try:
        loaded = x509.load_der_x509_crl(data)
        extensions = list(loaded.extensions)
    except (ValueError, TypeError, x509.DuplicateExtension):
        return PARSE_ERROR
    problem = _scope(extensions, url=url)
    if problem:
        return problem
    facts = crl.parse(data, entry=url, entries=False)
    index = crl_index.build(data)
    if isinstance(facts, str) or index is None:
        return PARSE_ERROR
    return Published(facts, index)


def _scope(extensions: list[x509.Extension[x509.ExtensionType]], *, url: str) -> str:
    """Say why the CRL does not stand for every certificate of its issuer at ``url`` ("" when it does)."""
    for extension in extensions:
        value = extension.value
        if isinstance(value, x509.DeltaCRLIndicator):
            return UNSUPPORTED
        if isinstance(value, x509.IssuingDistributionPoint):
            partial = (
                value.indirect_crl
                or value.only_contains_attribute_certs
                or value.only_contains_ca_certs
                or value.only_some_reasons is not None
            )
            if partial:
                return UNSUPPORTED
            names = [str(n.value) for n in value.full_name or () if isinstance(n, x509.UniformResourceIdentifier)]
            if names and url not in names:
                return IDP_MISMATCH
    return ""


def verify(published: Published, issuers: Iterable[CertFacts]) -> CrlFacts:
    """Verify the CRL's signature with the first issuer certificate whose key made it (as ``crl.verify`` does).

    The signed bytes are cut from the DER itself: cryptography's ``tbs_certlist_bytes`` re-encodes every entry
    (0.15 s for 100,000), which is the whole cost of reading such a CRL otherwise.
    """
    facts = published.facts
    candidates = [c for c in issuers if c.subject == facts.issuer and c.public_key_der]
    if not candidates:
        return replace(facts, verified=None, verify_error="issuer_unknown")
    try:
        loaded = x509.load_der_x509_crl(facts.der)
        outer = der.expect(facts.der, 0, der.SEQUENCE)
        signed = facts.der[outer.start : der.expect(facts.der, outer.start, der.SEQUENCE).end]
        signature, algorithm = loaded.signature, loaded.signature_hash_algorithm
        parameters = loaded.signature_algorithm_parameters
    except (ValueError, UnsupportedAlgorithm, der.DerError):
        return replace(facts, verified=False, verify_error="bad_signature")
    for candidate in candidates:
        try:
            key = serialization.load_der_public_key(candidate.public_key_der)
        except (ValueError, UnsupportedAlgorithm):
            continue
        if signed_by(key, signature, signed, algorithm, parameters):
            return replace(facts, verified=True, verify_error="")
    return replace(facts, verified=False, verify_error="bad_signature")
