"""The whole exposition passes `promtool check metrics` with no warnings."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support import DAY, NOW, PKI, Issued, RunningExporter, StartExporter, TLSServer, require_tool, server_context

pytestmark = pytest.mark.integration  # every test here starts a process or an external tool


def test_promtool_accepts_the_whole_exposition(
    run_exporter: StartExporter, tmp_path: Path, tls_server: type[TLSServer], pki: PKI, root: Issued
) -> None:
    promtool = require_tool("promtool")
    (tmp_path / "bundle.pem").write_bytes(pki.leaf(root, 'quote" and \\ back').cert_pem + root.cert_pem)
    (tmp_path / "broken.pem").write_bytes(b"junk")
    expired = pki.leaf(root, not_before=NOW - 9 * DAY, not_after=NOW - DAY)
    server = tls_server("127.0.0.1", context=server_context((expired,)))
    exporter: RunningExporter = run_exporter(
        f"files: [{{paths: ['{tmp_path}/*.pem']}}]\n"
        f"endpoints: [{{address: '{server.address}'}}, {{address: '127.0.0.1:1', timeout: 1s}}]\n"
        f"gunicorn: [{{name: app, cert_file: {tmp_path}/bundle.pem, key_file: {tmp_path}/k.pem, "
        f"endpoint: '{server.address}', pid: 999999}}]\n"
    )
    exporter.scan_now()
    _, body = exporter.get("/metrics")
    assert b"gunicorn_cert_endpoint_info" in body and b"gunicorn_cert_fingerprint_mismatch" in body
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == b"" and result.stderr.strip() == b"", result.stdout + result.stderr
