"""Endpoint metrics agree with prometheus-blackbox-exporter (the Debian package) probing the same server."""

from __future__ import annotations

import re
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.support import (
    DAY,
    NOW,
    PKI,
    Issued,
    RunningExporter,
    StartExporter,
    TLSServer,
    free_port,
    require_tool,
    server_context,
)
from tests.support.waiting import eventually


def _blackbox(binary: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    config = tmp_path / "blackbox.yml"
    config.write_text(
        "modules:\n  tls:\n    prober: tcp\n    timeout: 5s\n    tcp:\n      tls: true\n"
        "      tls_config: {insecure_skip_verify: true}\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def healthy() -> bool:  # (OSError: not up yet)
        urllib.request.urlopen(f"http://127.0.0.1:{port}/-/healthy", timeout=1).close()
        return True

    try:
        eventually(healthy, "blackbox_exporter to start", timeout=30)
    except AssertionError:
        proc.kill()
        raise
    return proc, port


@pytest.mark.integration
def test_leaf_expiry_and_fingerprint_agree_with_blackbox_exporter(
    run_exporter: StartExporter,
    tmp_path: Path,
    tls_server: type[TLSServer],
    pki: PKI,
    root: Issued,
    intermediate: Issued,
) -> None:
    binary = require_tool("prometheus-blackbox-exporter")
    leaf = pki.leaf(intermediate, not_after=NOW + 17 * DAY)  # expires before its issuers: the chain's earliest
    server = tls_server("127.0.0.1", context=server_context((leaf, intermediate)))
    proc, port = _blackbox(binary, tmp_path)
    try:
        url = f"http://127.0.0.1:{port}/probe?module=tls&target={server.address}"
        with urllib.request.urlopen(url, timeout=10) as response:
            theirs = response.read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert re.search(r"^probe_success 1$", theirs, re.MULTILINE), theirs
    their_fingerprint = re.search(r'probe_ssl_last_chain_info\{[^}]*fingerprint_sha256="([0-9a-f]+)"', theirs)
    their_expiry = re.search(r"^probe_ssl_earliest_cert_expiry (\S+)$", theirs, re.MULTILINE)
    assert their_fingerprint and their_expiry, theirs

    exporter: RunningExporter = run_exporter(f"endpoints: [{{address: '{server.address}'}}]")
    exporter.scan_now()
    metrics = exporter.metrics()
    where = f'address="127.0.0.1",endpoint="{server.address}",index="0",server_name=""'
    ours_expiry = metrics[f"gunicorn_cert_endpoint_not_after_timestamp_seconds{{{where}}}"]
    ours_info = [
        k
        for k in metrics
        if k.startswith("gunicorn_cert_endpoint_info{") and 'index="0"' in k and f'endpoint="{server.address}"' in k
    ]
    assert float(their_expiry.group(1)) == ours_expiry == leaf.cert.not_valid_after_utc.timestamp()
    assert len(ours_info) == 1
    assert f'fingerprint_sha256="{their_fingerprint.group(1)}"' in ours_info[0]
    assert their_fingerprint.group(1) == leaf.fingerprint
