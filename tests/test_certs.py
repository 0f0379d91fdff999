"""certs.py: bytes to facts, for every format, and a reason for everything else."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from gunicorn_cert_exporter.model import FileReason
from gunicorn_cert_exporter.sources import certs, pfx
from tests.support import DAY, NOW, PKI, Issued, require_tool, write_pair


def test_pem_bundle_reports_every_certificate_in_file_order(pki: PKI, root: Issued, intermediate: Issued) -> None:
    leaf = pki.leaf(intermediate, "app.example.com", sans=("app.example.com", "10.0.0.1"))
    parsed = certs.parse(leaf.cert_pem + b"garbage between blocks\n" + intermediate.cert_pem + root.cert_pem)
    assert parsed.error is None
    assert [c.fingerprint_sha256 for c in parsed.certs] == [
        leaf.fingerprint,
        intermediate.fingerprint,
        root.fingerprint,
    ]
    first = parsed.certs[0]
    assert first.subject_cn == "app.example.com"
    assert first.issuer_cn == "Test Intermediate CA"
    assert first.sans == ("DNS:app.example.com", "IP:10.0.0.1")
    assert first.not_after == leaf.cert.not_valid_after_utc.timestamp()
    assert first.not_before == leaf.cert.not_valid_before_utc.timestamp()
    assert first.serial == format(leaf.cert.serial_number, "x")
    assert (first.is_ca, first.self_signed) == (False, False)
    assert (parsed.certs[2].is_ca, parsed.certs[2].self_signed) == (True, True)
    with_aia = pki.leaf(root, ca_issuers="http://ca.test/root.der")
    assert certs.parse(with_aia.cert_pem).certs[0].ca_issuers == ("http://ca.test/root.der",)


def test_key_types_and_sizes_are_reported(pki: PKI, root: Issued) -> None:
    for key_type, bits in (("rsa", 2048), ("ecdsa", 256), ("ed25519", 256)):
        facts = certs.parse(pki.leaf(root, key_type=key_type).cert_pem).certs[0]
        assert (facts.key_type, facts.key_bits) == (key_type, bits)
    assert certs.parse(root.cert_pem).certs[0].signature_algorithm == "ecdsa-with-SHA256"


def test_der_certificate(root: Issued) -> None:
    parsed = certs.parse(root.cert.public_bytes(serialization.Encoding.DER))
    assert parsed.error is None and parsed.certs[0].fingerprint_sha256 == root.fingerprint


def test_pkcs12_with_password_gives_leaf_then_chain(pki: PKI, root: Issued) -> None:
    leaf = pki.leaf(root)
    blob = pkcs12.serialize_key_and_certificates(
        b"app", leaf.key, leaf.cert, [root.cert], serialization.BestAvailableEncryption(b"s3cret")
    )
    parsed = certs.parse(blob, password=b"s3cret", name="app.p12")
    assert [c.fingerprint_sha256 for c in parsed.certs] == [leaf.fingerprint, root.fingerprint]
    assert parsed.keys[0].spki_sha256 == parsed.certs[0].spki_sha256
    assert certs.parse(blob, password=b"wrong", name="app.p12").error is FileReason.BAD_PASSWORD
    assert certs.parse(blob, name="app.p12").error is FileReason.PASSWORD_REQUIRED
    assert certs.parse(blob, password=b"s3cret").error is None  # detected without the suffix too


def test_key_only_file_is_a_key_not_an_error(pki: PKI, root: Issued) -> None:
    leaf = pki.leaf(root)
    parsed = certs.parse(leaf.key_pem)
    assert parsed.error is None and parsed.certs == ()
    assert parsed.keys[0].spki_sha256 == certs.parse(leaf.cert_pem).certs[0].spki_sha256


def test_encrypted_key_is_a_key_without_a_public_half(pki: PKI, root: Issued) -> None:
    leaf = pki.leaf(root)
    pem = leaf.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    )
    parsed = certs.parse(pem)
    assert parsed.error is None and parsed.keys[0].encrypted and parsed.keys[0].spki_sha256 is None


def test_unusable_content_gets_a_reason() -> None:
    assert certs.parse(b"").error is FileReason.EMPTY
    assert certs.parse(b"  \n\t").error is FileReason.EMPTY
    assert certs.parse(b"\x00\x01garbage").error is FileReason.PARSE_ERROR
    broken = b"-----BEGIN CERTIFICATE-----\nnot base64!!\n-----END CERTIFICATE-----\n"
    assert certs.parse(broken).error is FileReason.PARSE_ERROR
    csr = b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
    assert certs.parse(csr).error is FileReason.NO_CERTIFICATE


def test_one_corrupt_block_keeps_the_good_ones_and_reports_the_error(root: Issued) -> None:
    broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    parsed = certs.parse(root.cert_pem + broken)
    assert parsed.error is FileReason.PARSE_ERROR and len(parsed.certs) == 1


def test_expired_and_future_certificates_parse_with_their_dates(pki: PKI, root: Issued) -> None:
    expired = pki.leaf(root, not_before=NOW - 90 * DAY, not_after=NOW - DAY)
    future = pki.leaf(root, not_before=NOW + DAY, not_after=NOW + 90 * DAY)
    assert certs.parse(expired.cert_pem).certs[0].not_after == (NOW - DAY).timestamp()
    assert certs.parse(future.cert_pem).certs[0].not_before == (NOW + DAY).timestamp()


def _openssl(*args: str, stdin: bytes = b"") -> bytes:
    openssl = require_tool("openssl")
    return subprocess.run([openssl, *args], input=stdin, capture_output=True, check=True).stdout


@pytest.mark.integration
def test_trusted_certificate_block_reads_as_its_certificate(pki: PKI, root: Issued) -> None:
    """`openssl x509 -trustout` (RHEL's ca-bundle.trust.crt) writes the certificate followed by trust settings."""
    trusted = _openssl("x509", "-trustout", "-addtrust", "serverAuth", stdin=root.cert_pem)
    assert b"-----BEGIN TRUSTED CERTIFICATE-----" in trusted
    parsed = certs.parse(trusted + pki.leaf(root).cert_pem)
    assert parsed.error is None, parsed.detail
    assert parsed.certs[0].fingerprint_sha256 == root.fingerprint
    assert len(parsed.certs) == 2


@pytest.mark.integration
def test_der_with_trailing_bytes_reads_as_openssl_reads_it(tmp_path: Path, root: Issued) -> None:
    der = root.cert.public_bytes(serialization.Encoding.DER)
    for name, tail in (("newline", b"\n"), ("crlf", b"\r\n"), ("zero padding", b"\x00" * 512)):
        path = tmp_path / f"{name}.der"
        path.write_bytes(der + tail)
        fingerprint = _openssl("x509", "-inform", "DER", "-in", str(path), "-noout", "-fingerprint", "-sha256")
        assert root.fingerprint in fingerprint.decode().replace(":", "").lower(), "openssl reads it"
        for fmt in ("auto", "der"):
            parsed = certs.parse(der + tail, fmt=fmt)
            assert parsed.error is None, (name, fmt, parsed.detail)
            assert parsed.certs[0].fingerprint_sha256 == root.fingerprint


@pytest.mark.integration
def test_pkcs12_cryptography_cannot_parse_is_not_called_a_bad_password(tmp_path: Path) -> None:
    """A well-formed PKCS#12 holding a certificate openssl reads but strict DER refuses (BOOLEAN true as 0x01)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lax")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(7).not_valid_before(NOW).not_valid_after(NOW + 30 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    der = cert.public_bytes(serialization.Encoding.DER)
    at = der.index(bytes.fromhex("0101ff"))
    (tmp_path / "lax.der").write_bytes(der[:at] + bytes.fromhex("010101") + der[at + 3 :])
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    pem = _openssl("x509", "-inform", "DER", "-in", str(tmp_path / "lax.der"))
    (tmp_path / "lax.pem").write_bytes(pem)
    p12 = _openssl(
        "pkcs12", "-export", "-in", str(tmp_path / "lax.pem"), "-inkey", str(tmp_path / "key.pem"),
        "-passout", "pass:right",
    )  # fmt: skip
    right = certs.parse(p12, password=b"right", name="lax.p12")
    assert right.error is FileReason.PARSE_ERROR
    assert "Extension::critical" in right.detail and "InvalidValue" in right.detail
    assert certs.parse(p12, password=b"wrong", name="lax.p12").error is FileReason.BAD_PASSWORD


def test_strict_der_rejection_says_which_block_and_why(root: Issued, pki: PKI) -> None:
    der = root.cert.public_bytes(serialization.Encoding.DER)
    at = der.index(bytes.fromhex("0101ff"))
    lax = der[:at] + bytes.fromhex("010101") + der[at + 3 :]
    block = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(lax) + b"-----END CERTIFICATE-----\n"
    parsed = certs.parse(pki.leaf(root).cert_pem + block)
    assert parsed.error is FileReason.PARSE_ERROR
    assert parsed.detail.startswith("PEM block 2 (CERTIFICATE): not valid DER: InvalidValue at Certificate::tbs_cert")
    assert len(parsed.certs) == 1  # the good block is still reported


def test_private_keys_are_fingerprinted_without_rsa_validation(root: Issued) -> None:
    """The exporter only fingerprints a key: skipping RSA validation cuts ~50 ms a key (see CHANGELOG)."""
    good = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_numbers()
    # A wrong CRT coefficient: validation would refuse the key, the fingerprint does not depend on it.
    odd = rsa.RSAPrivateNumbers(
        good.p, good.q, good.d, good.dmp1, good.dmq1, (good.iqmp + 1) % good.p, good.public_numbers
    ).private_key(unsafe_skip_rsa_key_validation=True)
    fmt: certs.Format
    for encoding, fmt in ((serialization.Encoding.PEM, "auto"), (serialization.Encoding.DER, "der")):
        data = odd.private_bytes(encoding, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        parsed = certs.parse(data, fmt=fmt)
        assert parsed.error is None, parsed.detail
        assert parsed.keys[0].key_type == "rsa" and parsed.keys[0].key_bits == 2048


@pytest.mark.integration
def test_pkcs12_with_a_key_cryptography_does_not_support_is_unsupported(tmp_path: Path) -> None:
    """An SM2 key (openssl makes it, cryptography has no such curve): `unsupported`, never `bad_password`."""
    _openssl("genpkey", "-algorithm", "SM2", "-out", str(tmp_path / "sm2.pem"))
    _openssl("req", "-x509", "-key", str(tmp_path / "sm2.pem"), "-out", str(tmp_path / "c.pem"), "-subj", "/CN=s",
             "-days", "30", "-sm3")  # fmt: skip
    p12 = _openssl("pkcs12", "-export", "-in", str(tmp_path / "c.pem"), "-inkey", str(tmp_path / "sm2.pem"),
                   "-passout", "pass:right")  # fmt: skip
    parsed = certs.parse(p12, password=b"right", name="sm2.p12")
    assert parsed.error is FileReason.UNSUPPORTED
    assert "1.2.156.10197.1.301" in parsed.detail


@pytest.mark.integration
@pytest.mark.parametrize("options", [(), ("-legacy",), ("-macalg", "sha512")])
def test_pkcs12_mac_check_agrees_with_openssl(tmp_path: Path, root: Issued, pki: PKI, options: tuple[str, ...]) -> None:
    leaf = pki.leaf(root)
    write_pair(leaf, tmp_path / "c.pem", tmp_path / "k.pem")
    p12 = _openssl("pkcs12", "-export", "-in", str(tmp_path / "c.pem"), "-inkey", str(tmp_path / "k.pem"),
                   "-passout", "pass:right", *options)  # fmt: skip
    (tmp_path / "x.p12").write_bytes(p12)
    legacy = [o for o in options if o == "-legacy"]
    _openssl("pkcs12", "-in", str(tmp_path / "x.p12"), "-noout", "-passin", "pass:right", *legacy)  # openssl agrees
    assert pfx.mac_verifies(p12, b"right") is True
    assert pfx.mac_verifies(p12, b"wrong") is False
    nomac = _openssl("pkcs12", "-export", "-in", str(tmp_path / "c.pem"), "-inkey", str(tmp_path / "k.pem"),
                     "-passout", "pass:right", "-nomac")  # fmt: skip
    assert pfx.mac_verifies(nomac, b"right") is None  # nothing to tell by


def test_pkcs12_cryptography_refuses_with_the_right_password_is_not_called_a_bad_password(
    pki: PKI, root: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cryptography says "Invalid password or PKCS12 data" for both causes (PKITS' inherited DSA parameters)."""
    leaf = pki.leaf(root)
    p12 = pkcs12.serialize_key_and_certificates(
        b"x", leaf.key, leaf.cert, None, serialization.BestAvailableEncryption(b"right")
    )

    def refuse(data: bytes, password: bytes | None, backend: object = None) -> object:
        raise ValueError("Invalid password or PKCS12 data")

    monkeypatch.setattr(pkcs12, "load_pkcs12", refuse)
    assert certs.parse(p12, password=b"right", name="a.p12").error is FileReason.UNSUPPORTED
    assert certs.parse(p12, password=b"wrong", name="a.p12").error is FileReason.BAD_PASSWORD
