"""crl_index.py against cryptography's own reading of the same CRLs: same serials, dates and reasons."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from gunicorn_cert_exporter.sources import certs, crl, crl_fetched, crl_index
from tests.support import PKI

_REASONS = [None, *(r for r in x509.ReasonFlags if r is not x509.ReasonFlags.unspecified)]


def _crl_der(entries: list[tuple[int, dt.datetime, x509.ReasonFlags | None]]) -> bytes:
    ca = PKI().ca("Index CA")
    now = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    builder = x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject).last_update(now)
    builder = builder.next_update(now + dt.timedelta(days=7))
    for serial, when, reason in entries:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
        if reason is not None:
            entry = entry.add_extension(x509.CRLReason(reason), critical=reason is x509.ReasonFlags.key_compromise)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_the_index_reads_what_cryptography_reads() -> None:
    rng = random.Random(7)
    when = [
        dt.datetime(1999, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
        dt.datetime(2051, 6, 7, 8, 9, 10, tzinfo=dt.timezone.utc),
    ]
    entries = [
        (rng.getrandbits(rng.choice([8, 64, 159])) + 1, rng.choice(when), rng.choice(_REASONS)) for _ in range(500)
    ]
    der = _crl_der(list({s: (s, w, r) for s, w, r in entries}.values()))
    expected = crl.parse(der)
    assert not isinstance(expected, str)
    index = crl_index.build(der)
    assert index is not None and len(index) == len(expected.revoked)
    for revoked in expected.revoked:
        assert crl_index.find(index, revoked.serial) == revoked
    assert crl_index.find(index, 0) is None and crl_index.find(index, max(index.serials) + 1) is None


def test_an_empty_crl_lists_nothing_and_broken_der_is_none() -> None:
    der = _crl_der([])
    index = crl_index.build(der)
    assert index is not None and len(index) == 0 and crl_index.find(index, 1) is None
    full = _crl_der([(5, dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), None)])
    assert crl_index.build(full[: len(full) // 2]) is None
    assert crl_index.build(b"\x30\x03\x02\x01\x01") is None


@pytest.mark.parametrize("kind", ["ecdsa", "rsa", "rsa-pss", "ed25519"])
def test_a_fetched_crl_verifies_with_its_issuers_key_whatever_the_scheme(kind: str) -> None:
    """The signed bytes are cut from the DER: every scheme a CA uses must still verify, and another key must not."""
    ca = PKI().ca("Scheme CA", key_type="rsa" if kind.startswith("rsa") else kind)
    other = PKI().ca("Scheme CA", key_type="rsa" if kind.startswith("rsa") else kind)
    now = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    builder = x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject).last_update(now)
    builder = builder.next_update(now + dt.timedelta(days=7))
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32) if kind == "rsa-pss" else None
    algorithm = None if kind == "ed25519" else hashes.SHA256()
    der = builder.sign(ca.key, algorithm, rsa_padding=pss).public_bytes(serialization.Encoding.DER)
    read = crl_fetched.read(der, url="http://crl.test/ca.crl")
    assert not isinstance(read, str)
    issuer, impostor = (certs.parse(c.cert_pem).certs[0] for c in (ca, other))
    assert crl_fetched.verify(read, [impostor]).verify_error == "bad_signature"
    assert crl_fetched.verify(read, [impostor, issuer]).verified is True
    assert crl_fetched.verify(read, []).verify_error == "issuer_unknown"
