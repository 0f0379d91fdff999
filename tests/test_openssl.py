"""Metrics agree with `openssl x509 -enddate -fingerprint -sha256` for certificates openssl itself made."""

from __future__ import annotations

import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.support import RunningExporter, StartExporter, require_tool

pytestmark = pytest.mark.integration  # every test here starts a process or an external tool


def _openssl(openssl: str, *args: str, cwd: Path) -> None:
    subprocess.run([openssl, *args], cwd=cwd, check=True, capture_output=True)


def _field(pattern: str, out: str) -> str:
    """Return what ``pattern``'s group captures in openssl's output."""
    match = re.search(pattern, out)
    assert match is not None, (pattern, out)
    return match.group(1)


def _facts(openssl: str, pem: Path) -> tuple[float, str]:
    out = subprocess.run(
        [openssl, "x509", "-in", str(pem), "-noout", "-enddate", "-fingerprint", "-sha256"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    end = _field(r"notAfter=(.+)", out).strip()
    when = datetime.strptime(end, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=timezone.utc).timestamp()
    fingerprint = _field(r"Fingerprint=([0-9A-F:]+)", out).replace(":", "").lower()
    return when, fingerprint


def test_openssl_made_directory_matches_metrics(run_exporter: StartExporter, tmp_path: Path) -> None:
    openssl = require_tool("openssl")
    d = tmp_path / "certs"
    d.mkdir()
    _openssl(
        openssl,
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "3650",
        "-subj",
        "/CN=OpenSSL Root",
        cwd=d,
    )
    for name, algo in (
        ("rsa", ["-newkey", "rsa:3072"]),
        ("ec", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"]),
        ("ed", ["-newkey", "ed25519"]),
    ):
        _openssl(
            openssl,
            "req",
            "-new",
            *algo,
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}.test",
            cwd=d,
        )
        _openssl(
            openssl,
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "47",
            "-out",
            f"{name}.pem",
            cwd=d,
        )
        (d / f"{name}.csr").unlink()
    (d / "bundle.pem").write_bytes((d / "rsa.pem").read_bytes() + (d / "ca.pem").read_bytes())
    _openssl(openssl, "x509", "-in", "ec.pem", "-outform", "DER", "-out", "ec.der", cwd=d)
    _openssl(
        openssl,
        "pkcs12",
        "-export",
        "-in",
        "ed.pem",
        "-inkey",
        "ed.key",
        "-certfile",
        "ca.pem",
        "-out",
        "ed.p12",
        "-passout",
        "pass:p12pass",
        cwd=d,
    )
    (tmp_path / "pw").write_text("p12pass\n")
    exporter: RunningExporter = run_exporter(
        f"files:\n"
        f"  - {{paths: ['{d}/*.pem', '{d}/*.der', '{d}/*.key']}}\n"
        f"  - {{paths: ['{d}/ed.p12'], format: pkcs12, password_file: '{tmp_path}/pw'}}\n"
    )
    exporter.scan_now()
    metrics = exporter.metrics()
    expected = {
        ("ca.pem", 0): "ca.pem",
        ("rsa.pem", 0): "rsa.pem",
        ("ec.pem", 0): "ec.pem",
        ("ed.pem", 0): "ed.pem",
        ("bundle.pem", 0): "rsa.pem",
        ("bundle.pem", 1): "ca.pem",
        ("ec.der", 0): "ec.pem",
        ("ed.p12", 0): "ed.pem",
        ("ed.p12", 1): "ca.pem",
    }
    infos = {k: v for k, v in metrics.items() if k.startswith("gunicorn_cert_file_info{")}
    for (path, index), source in expected.items():
        when, fingerprint = _facts(openssl, d / source)
        where = f'entry="",index="{index}",path="{d}/{path}"'
        assert metrics[f"gunicorn_cert_file_not_after_timestamp_seconds{{{where}}}"] == when, path
        matching = [k for k in infos if f'path="{d}/{path}"' in k and f'index="{index}"' in k]
        assert len(matching) == 1 and f'fingerprint_sha256="{fingerprint}"' in matching[0], (path, matching)
    for key in ("rsa.key", "ec.key", "ed.key"):  # key-only files are keys, not errors
        assert metrics[f'gunicorn_cert_file_up{{path="{d}/{key}"}}'] == 1
        assert metrics[f'gunicorn_cert_file_private_keys{{path="{d}/{key}"}}'] == 1
