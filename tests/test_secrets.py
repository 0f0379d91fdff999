"""Secrets (PKCS#12 passwords, private keys, basic-auth passwords) never reach metrics, pages, logs or errors."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import bcrypt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.support import PKI, Issued, TLSServer, free_port, server_context
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration  # every test here starts a process or an external tool

PASSWORD = "Tr0ub4dor-secret-7731"
WEB_PASSWORD = "scrape-pass-5521"


def _leaks(text: str, key_pem: bytes) -> list[str]:
    body = b"".join(key_pem.splitlines()[1:-1]).decode()
    needles = {"password": PASSWORD, "web password": WEB_PASSWORD, "key head": body[:24], "key tail": body[-24:]}
    return [name for name, needle in needles.items() if needle in text]


def test_no_secret_in_metrics_page_check_output_or_debug_logs(
    tmp_path: Path, tls_server: type[TLSServer], pki: PKI, root: Issued
) -> None:
    leaf = pki.leaf(root)
    p12 = tmp_path / "app.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(
        b"app", leaf.key, leaf.cert, None, serialization.BestAvailableEncryption(PASSWORD.encode())))  # fmt: skip
    (tmp_path / "wrong.p12").write_bytes(pkcs12.serialize_key_and_certificates(
        b"app", leaf.key, leaf.cert, None, serialization.BestAvailableEncryption(b"another")))  # fmt: skip
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    (tmp_path / "tls.crt").write_bytes(leaf.cert_pem)
    (tmp_path / "tls.key").write_bytes(leaf.key_pem)
    client = pki.leaf(root, "client", sans=())
    (tmp_path / "client.crt").write_bytes(client.cert_pem)
    (tmp_path / "client.key").write_bytes(client.key_pem)
    server = tls_server("127.0.0.1", context=server_context((leaf,), client_ca=root))
    config = tmp_path / "config.yaml"
    config.write_text(
        f"files:\n  - {{paths: ['{tmp_path}/*.p12'], password_env: P12_PASSWORD}}\n"
        f"  - {{paths: ['{tmp_path}/app.p12'], format: pkcs12, password_file: '{tmp_path}/pw'}}\n"
        f"  - {{paths: ['{tmp_path}/tls.key', '{tmp_path}/client.key']}}\n"
        f"endpoints: [{{address: '{server.address}', client_cert: '{tmp_path}/client.crt', "
        f"client_key: '{tmp_path}/client.key'}}]\n"
        f"gunicorn: [{{name: app, cert_file: {tmp_path}/tls.crt, key_file: {tmp_path}/tls.key, "
        f"endpoint: '{server.address}', pid: 999999}}]\n"
    )
    web = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(WEB_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    web.write_text(f"basic_auth_users: {{prom: '{hashed}'}}\n")
    env = {**os.environ, "P12_PASSWORD": PASSWORD}
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn_cert_exporter", "--config", str(config), "--web.config.file", str(web),
         "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "debug"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    auth = "Basic " + base64.b64encode(f"prom:{WEB_PASSWORD}".encode()).decode()
    pages = []
    try:

        def served() -> str | None:  # (OSError: not up yet)
            request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": auth})
            text = str(urllib.request.urlopen(request, timeout=5).read().decode())
            return text if "gunicorn_cert_endpoint_up" in text and "wrong.p12" in text else None

        metrics = eventually(served, "the exporter to serve the expected series")
        assert 'reason="bad_password"' in metrics  # the failing case was exercised
        for path in ("/metrics", "/"):
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": auth})
            pages.append(urllib.request.urlopen(request, timeout=5).read().decode())
        wrong = "Basic " + base64.b64encode(f"prom:{PASSWORD}".encode()).decode()
        try:
            urllib.request.urlopen(
                urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": wrong}), timeout=5
            )
        except urllib.error.HTTPError as exc:
            pages.append(exc.read().decode())
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    check = subprocess.run(
        [sys.executable, "-m", "gunicorn_cert_exporter", "check", "--config", str(config), "--output", "json"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    texts = {"metrics": pages[0], "status page": pages[1], "401 body": pages[2], "serve stdout": out,
             "serve debug log": err, "check json": check.stdout + check.stderr}  # fmt: skip
    assert "debug" in err  # the debug log really was on
    for where, text in texts.items():
        for key in (leaf.key_pem, client.key_pem):
            assert not _leaks(text, key), (where, _leaks(text, key))


def test_config_errors_do_not_echo_secret_values(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(f"files: [{{paths: [a.p12], password: '{PASSWORD}', password_file: 7}}]\n")
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn_cert_exporter", "check", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "files[0].password: unknown key" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr
