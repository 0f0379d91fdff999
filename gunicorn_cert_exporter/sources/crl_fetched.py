"""A CRL fetched from a distribution point: read it (DER, PEM accepted), refuse what it can't stand for. Pure.

On top of ``crl.parse``: a delta or indirect CRL, or one limited to some reasons, CA or attribute certificates, is
``unsupported`` (never misread as complete); a CRL whose Issuing Distribution Point names URLs must name the one
it came from (Let's Encrypt shards its CRLs: a shard served at the wrong URL would say "good" for leaves it
never covered).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from gunicorn_cert_exporter.file_parts import CrlFacts
from gunicorn_cert_exporter.sources import crl, crl_index

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
