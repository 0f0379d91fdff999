"""The HTML status page rendered by a real headless Chromium: readable, and hostile names stay text."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support import DAY, NOW, PKI, Issued, RunningExporter, StartExporter, TLSServer, require_tool, server_context

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _seeded(
    run_exporter: StartExporter, tmp_path: Path, tls_server: type[TLSServer], pki: PKI, root: Issued
) -> RunningExporter:
    (tmp_path / "ok.pem").write_bytes(pki.leaf(root, "fine.example").cert_pem)
    (tmp_path / "soon.pem").write_bytes(pki.leaf(root, "soon.example", not_after=NOW + 5 * DAY).cert_pem)
    evil = pki.leaf(root, "<img src=x onerror=\"document.title='pwned'\">")
    (tmp_path / "evil.pem").write_bytes(evil.cert_pem)
    (tmp_path / "broken.pem").write_bytes(b"junk")
    server = tls_server("127.0.0.1", context=server_context((pki.leaf(root, "old.example"),)))
    exporter: RunningExporter = run_exporter(
        f"files: [{{paths: ['{tmp_path}/*.pem']}}]\n"
        f"endpoints: [{{address: '{server.address}', server_name: localhost}}]\n"
        f"gunicorn: [{{name: app, cert_file: {tmp_path}/ok.pem, key_file: {tmp_path}/ok.pem, "
        f"endpoint: '{server.address}', server_name: localhost, pid: 999999}}]\n"
    )
    exporter.scan_now()
    return exporter


def test_status_page_in_headless_chromium(
    run_exporter: StartExporter, tmp_path: Path, tls_server: type[TLSServer], pki: PKI, root: Issued
) -> None:
    chromium = require_tool("chromium")
    exporter = _seeded(run_exporter, tmp_path, tls_server, pki, root)
    profile = tmp_path / "profile"
    common = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    dom = subprocess.run(
        [*common, "--virtual-time-budget=2000", "--dump-dom", exporter.url + "/"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert "<title>gunicorn-cert-exporter</title>" in dom  # no injected handler rewrote the title
    assert "&lt;img src=x onerror=" in dom and "<img" not in dom
    assert "DRIFT on 127.0.0.1" in dom and "soon.example" in dom and "parse_error" in dom
    assert dom.count(">old.example<") == 1  # the target's endpoint is listed once, not once per source
    shot = tmp_path / "status-page.png"
    subprocess.run(
        [*common, f"--screenshot={shot}", "--window-size=1280,900", "--hide-scrollbars", exporter.url + "/"],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 20_000  # a rendered page, not a blank one
