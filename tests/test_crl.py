"""CRL files: their dates as openssl reads them, their signature, and revocation answered with no network."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from gunicorn_cert_exporter import check, status
from gunicorn_cert_exporter.bands import Severity
from gunicorn_cert_exporter.model import Snapshot
from gunicorn_cert_exporter.scanning.store import Store
from gunicorn_cert_exporter.sources.files import FileScanner, Wanted
from tests.support import DAY, NOW, PKI, Issued, require_tool
from tests.test_collector import registry_for


def _crl(
    issuer: Issued, *, revoked: tuple[int, ...] = (), this: dt.datetime, until: dt.datetime
) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(this)
        .next_update(until)
        .add_extension(x509.CRLNumber(42), critical=False)
    )
    for serial in revoked:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(this)
            .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
            .build()
        )
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(issuer.key, hashes.SHA256())


def _next_update(path: Path, form: str) -> float:
    out = subprocess.run(
        [require_tool("openssl"), "crl", "-noout", "-nextupdate", "-inform", form, "-in", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return (
        dt.datetime.strptime(out.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y %Z")
        .replace(tzinfo=dt.timezone.utc)
        .timestamp()
    )


@pytest.mark.integration
@pytest.mark.parametrize("form", ["PEM", "DER"])
def test_crl_files_report_next_update_as_openssl_reads_it_and_verify(tmp_path: Path, pki: PKI, form: str) -> None:
    ca = pki.ca("CRL CA")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    crl = _crl(ca, revoked=(7, 9), this=NOW - DAY, until=NOW + 6 * DAY)
    path = tmp_path / f"ca.crl.{form.lower()}"
    path.write_bytes(crl.public_bytes(getattr(serialization.Encoding, form)))
    results = FileScanner(clock=lambda: 0.0, max_size=1 << 20).scan(
        [Wanted(str(path)), Wanted(str(tmp_path / "ca.pem"))]
    )
    (found,) = results[0].crls
    assert results[0].error is None
    assert found.next_update == _next_update(path, form)
    assert (found.number, len(found.revoked), found.verified) == ("42", 2, True)
    text = subprocess.run(
        [require_tool("openssl"), "crl", "-noout", "-text", "-inform", form, "-in", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert text.split("X509v3 CRL Number:")[1].split()[0] == found.number
    assert text.count("Serial Number:") == len(found.revoked)
    assert f"Issuer: {found.issuer.replace('CN=', 'CN = ')}" in text
    store = Store()
    store.update(files=results)
    get = registry_for(store).get_sample_value
    assert (
        get("gunicorn_cert_file_crl_next_update_timestamp_seconds", {"path": str(path), "index": "0"})
        == found.next_update
    )
    assert get("gunicorn_cert_file_crl_verified", {"path": str(path), "index": "0"}) == 1


def test_a_crl_signed_by_another_key_does_not_verify_and_answers_nothing(tmp_path: Path, pki: PKI) -> None:
    ca, impostor = pki.ca("Same Name CA"), pki.ca("Same Name CA")
    leaf = pki.leaf(ca, "victim")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem + leaf.cert_pem)
    (tmp_path / "ca.crl").write_bytes(
        _crl(impostor, revoked=(leaf.cert.serial_number,), this=NOW, until=NOW + 7 * DAY).public_bytes(
            serialization.Encoding.PEM
        )
    )
    results = FileScanner(clock=lambda: 0.0, max_size=1 << 20).scan(
        [Wanted(str(tmp_path / "ca.pem")), Wanted(str(tmp_path / "ca.crl"))]
    )
    assert results[1].crls[0].verify_error == "bad_signature"
    store = Store()
    store.update(files=results)
    assert not [m for m in registry_for(store).collect() if m.name == "gunicorn_cert_revoked" and m.samples]


def test_a_listed_certificate_is_revoked_critical_and_a_stale_crl_is_critical(tmp_path: Path, pki: PKI) -> None:
    ca = pki.ca("Private CA")
    bad, good = pki.leaf(ca, "bad"), pki.leaf(ca, "good")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "bad.pem").write_bytes(bad.cert_pem)
    (tmp_path / "good.pem").write_bytes(good.cert_pem)
    crl = _crl(ca, revoked=(bad.cert.serial_number,), this=NOW - 8 * DAY, until=NOW - DAY)  # stale by a day
    (tmp_path / "ca.crl").write_bytes(crl.public_bytes(serialization.Encoding.DER))
    wanted = [Wanted(str(tmp_path / n)) for n in ("ca.pem", "bad.pem", "good.pem", "ca.crl")]
    results = FileScanner(clock=lambda: 0.0, max_size=1 << 20).scan(wanted)
    store = Store()
    store.update(files=results)
    get = registry_for(store).get_sample_value
    where = {"entry": "", "endpoint": "", "server_name": "", "address": "", "index": "0"}
    assert get("gunicorn_cert_revoked", {**where, "path": str(tmp_path / "bad.pem")}) == 1
    assert get("gunicorn_cert_revoked", {**where, "path": str(tmp_path / "good.pem")}) == 0
    status_labels = {
        **where,
        "path": str(tmp_path / "bad.pem"),
        "method": "crl_file",
        "status": "revoked",
        "reason": "key_compromise",
    }
    assert get("gunicorn_cert_revocation_status", status_labels) == 1
    rows = check.rows(status.build(Snapshot(files=results), now=NOW.timestamp()))
    by_source = {(r.source, r.subject): r for r in rows}
    assert by_source[(str(tmp_path / "bad.pem"), "bad")].status is Severity.CRITICAL
    assert "revoked (key_compromise)" in by_source[(str(tmp_path / "bad.pem"), "bad")].note
    assert by_source[(str(tmp_path / "good.pem"), "good")].status is Severity.OK
    assert by_source[(str(tmp_path / "ca.crl"), "CRL of Private CA #42")].status is Severity.CRITICAL
    assert check.verdict(rows) is Severity.CRITICAL


def test_a_crl_in_the_last_quarter_of_its_window_is_a_warning(tmp_path: Path, pki: PKI) -> None:
    ca = pki.ca("Weekly CA")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    fresh = _crl(ca, this=NOW - 5 * DAY, until=NOW + 2.5 * DAY)  # 2.5 of 7.5 days left: a third, not yet a quarter
    late = _crl(ca, this=NOW - 6 * DAY, until=NOW + 1 * DAY)  # 1 of 7 days left
    for name, crl in (("fresh.crl", fresh), ("late.crl", late)):
        (tmp_path / name).write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    wanted = [Wanted(str(tmp_path / n)) for n in ("ca.pem", "fresh.crl", "late.crl")]
    results = FileScanner(clock=lambda: 0.0, max_size=1 << 20).scan(wanted)
    rows = {
        r.source: r.status
        for r in check.rows(status.build(Snapshot(files=results), now=NOW.timestamp()))
        if r.subject.startswith("CRL")
    }
    assert rows == {str(tmp_path / "fresh.crl"): Severity.OK, str(tmp_path / "late.crl"): Severity.WARNING}


@pytest.mark.integration
def test_the_check_command_is_critical_for_a_crl_past_next_update(tmp_path: Path, pki: PKI) -> None:
    ca = pki.ca("Check CA")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    stale = _crl(ca, this=NOW - 8 * DAY, until=NOW - DAY)
    (tmp_path / "ca.crl").write_bytes(stale.public_bytes(serialization.Encoding.PEM))
    config = tmp_path / "config.yaml"
    config.write_text(f"files:\n  - paths: ['{tmp_path}/ca.*']\n")
    done = subprocess.run(
        [sys.executable, "-m", "gunicorn_cert_exporter", "check", "--config", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "CRL past its nextUpdate" in done.stdout and "CRL of Check CA #42" in done.stdout
