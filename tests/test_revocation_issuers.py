"""Where a fetched CRL's issuer comes from: the bundle, a files entry's ca_file, the leaf's AIA caIssuers URL."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization

from tests.revocation_support import REASON, Publisher, config, crl_der, leaf, one, samples
from tests.support import Issued, start_exporter


def test_the_issuer_is_read_from_the_files_entrys_ca_file(tmp_path: Path, publisher: Publisher, ca: Issued) -> None:
    url = publisher.url("/ca.crl")
    bad = leaf(ca, "bad.test", crl=url)
    publisher.route("/ca.crl", crl_der(ca, revoked={bad.cert.serial_number: REASON}))
    (tmp_path / "alone.pem").write_bytes(bad.cert_pem)
    (tmp_path / "issuers").mkdir()
    (tmp_path / "issuers" / "ca.pem").write_bytes(ca.cert_pem)
    path = config(tmp_path, files=[tmp_path / "alone.pem"])
    text = path.read_text().replace(
        'alone.pem"]\n', f'alone.pem"]\n    ca_file: {str(tmp_path / "issuers" / "ca.pem")!r}\n'
    )
    path.write_text(text)
    exporter = start_exporter(path)
    try:
        exporter.scan_now()
        assert one(samples(exporter, "gunicorn_cert_revoked"), "alone.pem") == 1.0
    finally:
        exporter.close()


def test_the_issuer_is_fetched_from_ca_issuers_when_no_file_holds_it(
    tmp_path: Path, publisher: Publisher, ca: Issued
) -> None:
    url = publisher.url("/ca.crl")
    bad = leaf(ca, "bad.test", crl=url, ca_issuers=publisher.url("/ca.der"))
    publisher.route("/ca.crl", crl_der(ca, revoked={bad.cert.serial_number: REASON}))
    publisher.route("/ca.der", ca.cert.public_bytes(serialization.Encoding.DER))
    (tmp_path / "alone.pem").write_bytes(bad.cert_pem)  # no CA in the bundle
    exporter = start_exporter(config(tmp_path, files=[tmp_path / "alone.pem"]))
    try:
        exporter.scan_now()
        assert one(samples(exporter, "gunicorn_cert_revoked"), "alone.pem") == 1.0
        assert publisher.asked("/ca.der") == 1
    finally:
        exporter.close()


def test_without_an_issuer_the_crl_is_issuer_unknown(tmp_path: Path, publisher: Publisher, ca: Issued) -> None:
    url = publisher.url("/ca.crl")
    bad = leaf(ca, "bad.test", crl=url)
    publisher.route("/ca.crl", crl_der(ca, revoked={bad.cert.serial_number: REASON}))
    (tmp_path / "alone.pem").write_bytes(bad.cert_pem)
    exporter = start_exporter(config(tmp_path, files=[tmp_path / "alone.pem"]))
    try:
        exporter.scan_now()
        assert samples(exporter, "gunicorn_cert_revoked") == {}
        status = samples(exporter, "gunicorn_cert_revocation_status")
        assert one(status, 'status="unknown"', 'reason="issuer_unknown"') == 1.0
    finally:
        exporter.close()
