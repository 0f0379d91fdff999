"""A running exporter over kubeconfigs, keystores and CRL files: entries in every view, hostile files contained."""

from __future__ import annotations

import base64
import json
import os
import tracemalloc
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from gunicorn_cert_exporter.reasons import FileReason
from gunicorn_cert_exporter.sources import der, formats, keystore
from gunicorn_cert_exporter.sources.files import FileScanner, Wanted
from tests.support import DAY, NOW, PKI, StartExporter, TLSServer, server_context

_KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: prod
  cluster: {{server: "https://127.0.0.1:1", certificate-authority: ca.pem}}
users:
- name: kubernetes-admin
  user: {{client-certificate-data: {cert}, client-key-data: {key}}}
"""


def _revoking_crl(issuer: Any, serial: int) -> bytes:
    entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOW - DAY).build()
    builder = x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject)
    builder = builder.last_update(NOW - DAY).next_update(NOW + 6 * DAY).add_revoked_certificate(entry)
    return builder.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _status(exporter: Any) -> dict[str, Any]:
    code, body = exporter.get("/api/v1/status")
    assert code == 200
    document: dict[str, Any] = json.loads(body)
    return document


def test_a_served_leaf_listed_in_a_verifying_crl_file_is_revoked_with_no_network(
    run_exporter: StartExporter, tls_server: type[TLSServer], tmp_path: Path, pki: PKI
) -> None:
    ca = pki.ca("Private Issuing CA")
    leaf = pki.leaf(ca, "localhost")
    server = tls_server("127.0.0.1", context=server_context((leaf, ca)))
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "pki" / "ca.crl").write_bytes(_revoking_crl(ca, leaf.cert.serial_number))
    exporter = run_exporter(
        f"files:\n  - paths: ['{tmp_path}/pki/*']\n"
        f"endpoints:\n  - address: '127.0.0.1:{server.port}'\n    ca_file: '{tmp_path}/pki/ca.pem'\n"
    )
    exporter.scan_now()
    revoked = {k: v for k, v in exporter.metrics().items() if k.startswith("gunicorn_cert_revoked{")}
    served = [k for k in revoked if f'endpoint="127.0.0.1:{server.port}"' in k and 'index="0"' in k]
    assert len(served) == 1 and revoked[served[0]] == 1, revoked
    document = _status(exporter)
    assert document["status"] == "CRITICAL"
    row = next(s for s in document["sources"] if s["kind"] == "endpoint")
    assert row["certs"][0]["note"].startswith("revoked")


def test_page_api_and_metrics_name_the_entry_beside_the_path(
    run_exporter: StartExporter, tmp_path: Path, pki: PKI
) -> None:
    root = pki.ca("Kube CA")
    admin = pki.leaf(root, "kubernetes-admin")
    (tmp_path / "ca.pem").write_bytes(root.cert_pem)
    encoded = {k: base64.b64encode(v).decode() for k, v in (("cert", admin.cert_pem), ("key", admin.key_pem))}
    (tmp_path / "admin.conf").write_text(_KUBECONFIG.format(**encoded))
    exporter = run_exporter(f"files:\n  - paths: ['{tmp_path}/admin.conf']\n    format: kubeconfig\n")
    exporter.scan_now()
    metrics = exporter.metrics()
    entries = {k.split('entry="')[1].split('"')[0] for k in metrics if k.startswith("gunicorn_cert_file_info{")}
    assert entries == {"cluster:prod", "user:kubernetes-admin"}
    document = _status(exporter)
    row = next(s for s in document["sources"] if s["source"].endswith("admin.conf"))
    assert {c["entry"] for c in row["certs"]} == {"cluster:prod", "user:kubernetes-admin"}
    code, page = exporter.get("/")
    assert code == 200 and b"user:kubernetes-admin" in page
    key_text = encoded["key"][20:80].encode()
    for _, body in (exporter.get("/metrics"), exporter.get("/api/v1/status"), exporter.get("/")):
        assert key_text not in body


def test_hostile_stores_and_a_fifo_reference_each_fail_alone_within_one_scan(tmp_path: Path, pki: PKI) -> None:
    """A store claiming 2^31 entries, one cut mid-certificate and a kubeconfig naming a FIFO: bounded, reported."""
    root = pki.ca("Fine CA")
    claim = keystore.JKS_MAGIC + (2).to_bytes(4, "big") + (2**31).to_bytes(4, "big") + bytes(88)
    (tmp_path / "huge.jks").write_bytes(claim)
    cert = root.cert.public_bytes(serialization.Encoding.DER)
    body = (2).to_bytes(4, "big") + (4).to_bytes(2, "big") + b"root" + bytes(8) + (5).to_bytes(2, "big") + b"X.509"
    store = keystore.JKS_MAGIC + (2).to_bytes(4, "big") + (1).to_bytes(4, "big") + body + len(cert).to_bytes(4, "big")
    (tmp_path / "cut.jks").write_bytes(store + cert[: len(cert) // 2])
    os.mkfifo(tmp_path / "fifo.pem")
    (tmp_path / "kube.conf").write_text("kind: Config\nusers:\n- name: f\n  user:\n    client-certificate: fifo.pem\n")
    (tmp_path / "fine.pem").write_bytes(root.cert_pem)
    scanner = FileScanner(clock=lambda: 0.0, max_size=1 << 20)
    wanted = [Wanted(str(tmp_path / n)) for n in ("huge.jks", "cut.jks", "kube.conf", "fine.pem")]
    tracemalloc.start()
    results = {Path(r.path).name: r for r in scanner.scan(wanted)}
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 << 20, peak  # nothing sized by a claimed count or length
    assert results["huge.jks"].error is FileReason.PARSE_ERROR and "entries claimed" in results["huge.jks"].detail
    assert results["cut.jks"].error is FileReason.PARSE_ERROR and "certificate claims" in results["cut.jks"].detail
    assert [(p.entry, p.reason) for p in results["kube.conf"].entry_errors] == [("user:f", FileReason.NOT_REGULAR_FILE)]
    assert results["fine.pem"].error is None and len(results["fine.pem"].certs) == 1


def test_auto_tells_a_der_crl_from_a_der_certificate(pki: PKI) -> None:
    ca = pki.ca("DER CA")
    crl = _revoking_crl(ca, 5)
    crl_der = x509.load_pem_x509_crl(crl).public_bytes(serialization.Encoding.DER)
    as_crl = formats.parse(crl_der)
    as_cert = formats.parse(ca.cert.public_bytes(serialization.Encoding.DER))
    assert (len(as_crl.crls), len(as_crl.certs), as_crl.error) == (1, 0, None)
    assert (len(as_cert.crls), len(as_cert.certs), as_cert.error) == (0, 1, None)


def test_the_der_reader_refuses_a_length_past_the_end_and_indefinite_lengths() -> None:
    assert der.element(b"\x30\x03\x02\x01\x05") == der.Element(0x30, 2, 5)
    assert der.element(b"\x30\x82\x01\x00" + bytes(256)).end == 260
    for broken in (b"\x30\x05\x02\x01", b"\x30\x80\x00\x00", b"\x30\x84\xff\xff\xff\xff", b"\x30\x82\x01", b"\x30"):
        assert der.first(broken) is None and not der.complete(broken)
    assert not der.complete(b"\x30\x00\x00")  # trailing bytes
