"""Java keystores made by keytool: every certificate with its alias, the store password, hostile counts."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

from gunicorn_cert_exporter.reasons import FileReason
from gunicorn_cert_exporter.sources import formats, keystore
from gunicorn_cert_exporter.sources.files import FileScanner, Wanted
from tests.support import DAY, NOW, PKI, Issued, require_tool

PASSWORD = "changeit"


def _keytool(*args: str) -> str:
    done = subprocess.run([require_tool("keytool"), *args], capture_output=True, text=True, check=True, timeout=120)
    return done.stdout


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory, pki: PKI, root: Issued) -> dict[str, Path]:
    """JKS, JCEKS and PKCS#12 stores: a key entry with a two-certificate chain and two trusted entries."""
    base = tmp_path_factory.mktemp("stores")
    inter = pki.issue("Store Inter", issuer=root, ca=True, not_after=NOW + 900 * DAY)
    leaf = pki.leaf(inter, "tomcat.test")
    other = pki.ca("Other Root")
    source = base / "key.p12"
    encryption = BestAvailableEncryption(PASSWORD.encode())
    source.write_bytes(pkcs12.serialize_key_and_certificates(b"tomcat", leaf.key, leaf.cert, [inter.cert], encryption))
    (base / "root.pem").write_bytes(root.cert_pem)
    (base / "other.pem").write_bytes(other.cert_pem)
    made = {}
    for kind in ("JKS", "JCEKS", "PKCS12"):
        store = made[kind] = base / f"store.{kind.lower()}"
        common = ["-keystore", str(store), "-storetype", kind, "-storepass", PASSWORD]
        _keytool("-importkeystore", "-noprompt", "-srckeystore", str(source), "-srcstoretype", "PKCS12",
                 "-srcstorepass", PASSWORD, "-destkeystore", str(store), "-deststoretype", kind,
                 "-deststorepass", PASSWORD, "-destkeypass", PASSWORD)  # fmt: skip
        for alias in ("root", "other"):
            _keytool("-importcert", "-noprompt", "-alias", alias, "-file", str(base / f"{alias}.pem"), *common)
        if kind == "JCEKS":
            _keytool("-genseckey", "-alias", "sek", "-keyalg", "AES", "-keysize", "128", "-keypass", PASSWORD, *common)
    return made


def _listed(store: Path, kind: str) -> dict[str, list[str]]:
    """Each alias's certificates (SHA-256) as `keytool -list -rfc` lists them (it refuses -v with -rfc)."""
    text = _keytool("-list", "-rfc", "-keystore", str(store), "-storetype", kind, "-storepass", PASSWORD)
    out: dict[str, list[str]] = {}
    for block in text.split("Alias name: ")[1:]:
        alias = block.split("\n", 1)[0].strip()
        pems = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", block, re.DOTALL)
        certs = [x509.load_pem_x509_certificate(p.encode()) for p in pems]
        out[alias] = [c.fingerprint(hashes.SHA256()).hex() for c in certs]
    return out


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["JKS", "JCEKS", "PKCS12"])
def test_every_keytool_certificate_is_read_with_its_alias(stores: dict[str, Path], kind: str) -> None:
    password = PASSWORD.encode() if kind == "PKCS12" else None  # JKS/JCEKS: read without the password
    parsed = formats.parse(stores[kind].read_bytes(), password=password, name=str(stores[kind]))
    assert parsed.error is None, parsed.detail
    ours: dict[str, list[str]] = {}
    for entry, cert in zip(parsed.entries, parsed.certs, strict=True):
        ours.setdefault(entry, []).append(cert.fingerprint_sha256)
    expected = _listed(stores[kind], kind)
    if kind == "PKCS12":  # keytool names a key entry's chain certificates in their own bags; compare the set
        assert {f for fs in ours.values() for f in fs} == {f for fs in expected.values() for f in fs}
        assert ours["alias:root"] == expected["root"] and ours["alias:other"] == expected["other"]
    else:
        assert ours == {f"alias:{alias}": fps for alias, fps in expected.items() if fps}  # a secret key has none
        assert len(ours["alias:tomcat"]) == 2  # the key entry's two-certificate chain
    assert parsed.secret_keys == (1 if kind == "JCEKS" else 0)


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["JKS", "JCEKS"])
def test_the_store_password_is_checked_by_the_keyed_digest(stores: dict[str, Path], kind: str) -> None:
    data = stores[kind].read_bytes()
    assert formats.parse(data, password=PASSWORD.encode()).error is None
    wrong = formats.parse(data, password=b"wrong")
    assert wrong.error is FileReason.BAD_PASSWORD
    assert PASSWORD not in wrong.detail and "wrong" not in wrong.detail
    assert len(formats.parse(data).certs) == 4  # no password: the certificates are still read


@pytest.mark.integration
def test_debian_java_cacerts_reports_as_many_certificates_as_keytool() -> None:
    cacerts = Path("/etc/ssl/certs/java/cacerts")
    if not cacerts.exists():
        pytest.fail("install ca-certificates-java (scripts/test does): it writes /etc/ssl/certs/java/cacerts")
    listed = _keytool("-list", "-cacerts", "-storepass", PASSWORD)
    scanner = FileScanner(clock=lambda: 0.0, max_size=4 << 20)
    (result,) = scanner.scan([Wanted(str(cacerts))])
    assert result.error is None
    assert len(result.certs) == listed.count("trustedCertEntry") > 100


def test_a_short_store_claiming_2_31_entries_is_refused_before_reading_them() -> None:
    data = keystore.JKS_MAGIC + (2).to_bytes(4, "big") + (2**31).to_bytes(4, "big") + bytes(88)
    assert len(data) == 100
    parsed = formats.parse(data)
    assert parsed.error is FileReason.PARSE_ERROR
    assert "2147483648 entries claimed" in parsed.detail


@pytest.mark.integration
def test_a_store_truncated_mid_certificate_is_a_parse_error(stores: dict[str, Path]) -> None:
    data = stores["JKS"].read_bytes()
    parsed = formats.parse(data[: len(data) // 2])
    assert parsed.error is FileReason.PARSE_ERROR
    assert "claims" in parsed.detail


def test_a_certificate_length_past_the_end_is_refused() -> None:
    header = keystore.JKS_MAGIC + (2).to_bytes(4, "big") + (1).to_bytes(4, "big")
    entry = (2).to_bytes(4, "big") + (1).to_bytes(2, "big") + b"a" + bytes(8) + (5).to_bytes(2, "big") + b"X.509"
    data = header + entry + (2**31 - 1).to_bytes(4, "big") + bytes(10) + bytes(20)
    parsed = formats.parse(data)
    assert parsed.error is FileReason.PARSE_ERROR
    assert "certificate claims 2147483647 bytes" in parsed.detail


def test_a_jceks_secret_key_claiming_more_fields_than_bytes_is_refused_at_once() -> None:
    sealed = b"\xac\xed\x00\x05" + b"\x73\x72" + (1).to_bytes(2, "big") + b"X" + bytes(8) + b"\x02" + b"\xff\xff"
    entry = (3).to_bytes(4, "big") + (3).to_bytes(2, "big") + b"sek" + bytes(8) + sealed + bytes(16)
    data = keystore.JCEKS_MAGIC + (2).to_bytes(4, "big") + (1).to_bytes(4, "big") + entry + bytes(20)
    parsed = formats.parse(data)
    assert parsed.error is FileReason.PARSE_ERROR
    assert "secret key entry: 65535 items claimed" in parsed.detail


def test_a_stored_certificate_cryptography_refuses_is_an_error_of_its_alias_only(root: Issued) -> None:
    def trusted(alias: bytes, der: bytes) -> bytes:
        head = (2).to_bytes(4, "big") + len(alias).to_bytes(2, "big") + alias + bytes(8) + (5).to_bytes(2, "big")
        return head + b"X.509" + len(der).to_bytes(4, "big") + der

    good = root.cert.public_bytes(serialization.Encoding.DER)
    at = good.index(b"\xa0\x03\x02\x01\x02")  # the [0] version: v3 (2) becomes 41, which cryptography refuses
    bad = good[: at + 4] + b"\x29" + good[at + 5 :]
    data = keystore.JKS_MAGIC + (2).to_bytes(4, "big") + (2).to_bytes(4, "big")
    data += trusted(b"bad", bad) + trusted(b"good", good) + bytes(20)
    parsed = formats.parse(data)
    assert list(parsed.entries) == ["alias:good"]
    assert [(p.entry, p.reason) for p in parsed.entry_errors] == [("alias:bad", FileReason.PARSE_ERROR)]
