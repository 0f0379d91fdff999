"""cli.py as users run it: exit codes, outputs, serve with signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gunicorn_cert_exporter import __version__
from tests.support import DAY, NOW, PKI, Issued, eventually, free_port

pytestmark = pytest.mark.integration  # every test here starts a process or an external tool

EXPORTER = [sys.executable, "-m", "gunicorn_cert_exporter"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EXPORTER, *args], capture_output=True, text=True, timeout=timeout, check=False)


def _config(tmp_path: Path, *certs: tuple[str, bytes]) -> str:
    for name, pem in certs:
        (tmp_path / name).write_bytes(pem)
    path = tmp_path / "config.yaml"
    path.write_text(f"files: [{{paths: ['{tmp_path}/*.pem']}}]\n")
    return str(path)


def test_check_exit_codes_follow_nagios(tmp_path: Path, pki: PKI, root: Issued) -> None:
    ok = _config(tmp_path, ("a.pem", root.cert_pem))
    assert run("check", "--config", ok).returncode == 0
    soon = pki.leaf(root, not_before=NOW - 80 * DAY, not_after=NOW + 10 * DAY)  # 90 days: warns below 22.5 left
    (tmp_path / "soon.pem").write_bytes(soon.cert_pem)
    warned = run("check", "--config", ok)
    assert warned.returncode == 1 and "WARNING" in warned.stdout
    assert run("check", "--config", ok, "--critical", "20d").returncode == 2
    (tmp_path / "broken.pem").write_bytes(
        b"junk"
    )  # unreadable, like a refused endpoint: critical (tests/test_check.py)
    assert run("check", "--config", ok, "--warning", "1d").returncode == 2


def test_check_help_names_the_default_bands() -> None:
    result = run("check", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps the help at the terminal's width
    assert "else '28d, 25%')" in text and "else '7d, 12.5%')" in text


def test_check_json_and_prometheus_outputs(tmp_path: Path, root: Issued) -> None:
    config = _config(tmp_path, ("a.pem", root.cert_pem))
    document = json.loads(run("check", "--config", config, "--output", "json").stdout)
    assert document["status"] == "OK" and document["checks"][0]["subject"] == "Test Root CA"
    exposition = run("check", "--config", config, "--output", "prometheus").stdout
    assert f'gunicorn_cert_file_up{{path="{tmp_path}/a.pem"}} 1.0' in exposition


def test_bad_config_exits_2_listing_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("scan: {interval: x}\ngunicorn: [{name: a, cert_file: c, key_file: k, endpoint: nope}]\n")
    result = run("check", "--config", str(path))
    assert result.returncode == 2
    assert "scan.interval" in result.stderr and "gunicorn[0].endpoint" in result.stderr
    assert run("serve", "--config", str(tmp_path / "missing.yaml")).returncode == 2


def _wait_metrics(url: str, needle: str, timeout: float = 20) -> str:
    def fetch() -> str | None:
        with urllib.request.urlopen(url, timeout=2) as response:
            body = response.read().decode()
        return body if needle in body else None

    return eventually(fetch, f"{needle!r} at {url}", timeout=timeout)


def test_serve_reloads_on_sighup_and_stops_on_sigterm(tmp_path: Path, pki: PKI, root: Issued) -> None:
    config = _config(tmp_path, ("a.pem", root.cert_pem))
    port = free_port()
    proc = subprocess.Popen(
        [*EXPORTER, "--config", config, "--web.listen-address", f"127.0.0.1:{port}", "--log.format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        _wait_metrics(url, f'path="{tmp_path}/a.pem"')
        Path(config).write_text(f"files: [{{paths: ['{tmp_path}/b.pem']}}]\n")
        (tmp_path / "b.pem").write_bytes(pki.leaf(root).cert_pem)
        proc.send_signal(signal.SIGHUP)
        body = _wait_metrics(url, f'path="{tmp_path}/b.pem"')
        assert f'path="{tmp_path}/a.pem"' not in body  # left the config, left the output
        Path(config).write_text("files: nonsense\n")
        proc.send_signal(signal.SIGHUP)
        body = _wait_metrics(url, "gunicorn_cert_exporter_config_last_reload_successful 0.0")
        assert f'path="{tmp_path}/b.pem"' in body  # the old config keeps running
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None
        logs = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]
        assert {"listening", "config reloaded", "shutting down"} <= {entry["msg"] for entry in logs}
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_default_config_serves_real_series_with_no_arguments() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*EXPORTER, "--web.listen-address", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        body = _wait_metrics(f"http://127.0.0.1:{port}/metrics", 'gunicorn_cert_master_up{target="app"}')
        samples = {
            s.name + str(sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(body)
            for s in family.samples
        }
        trust_store = [k for k in samples if k.startswith("gunicorn_cert_file_not_after_timestamp_seconds")]
        assert len(trust_store) >= 10, "the embedded default reads the OS trust store"
        # The example target is there and explained, and nothing pretends it is running.
        assert samples["gunicorn_cert_master_up[('target', 'app')]"] == 0.0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_python_dash_m_and_console_script_agree() -> None:
    script = Path(sys.executable).with_name("gunicorn-cert-exporter")  # the console script beside this interpreter
    by_script = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60, check=True)
    assert by_script.stdout.strip() == run("--version").stdout.strip() == f"gunicorn-cert-exporter {__version__}"


def test_check_prints_file_names_that_are_not_utf8(root: Issued) -> None:
    # A short directory: relative paths resolve against the config file's, and the table must show the name whole.
    with tempfile.TemporaryDirectory(prefix="u", dir="/tmp") as short:
        tmp_path = Path(short)
        (tmp_path / os.fsdecode(b"bad\xff.pem")).write_bytes(root.cert_pem)
        (tmp_path / "config.yaml").write_text("files: [{paths: ['*.pem']}]\n")
        strict = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
        for output in ("table", "json"):
            result = subprocess.run([*EXPORTER, "check", "--config", "config.yaml", "--output", output], cwd=tmp_path,
                                    capture_output=True, timeout=60, check=False, env=strict)  # fmt: skip
            assert result.returncode == 0 and result.stderr == b"", result.stderr
            assert b"bad\\udcff.pem" in result.stdout


def test_serve_listens_on_every_listen_address(tmp_path: Path, root: Issued) -> None:
    from tests.support import ipv6_available

    config = _config(tmp_path, ("a.pem", root.cert_pem))
    ports = [free_port(), free_port()]
    hosts = ["127.0.0.1", "[::1]" if ipv6_available() else "127.0.0.1"]
    addresses = [f"{host}:{port}" for host, port in zip(hosts, ports, strict=True)]
    proc = subprocess.Popen(
        [*EXPORTER, "--config", config, *(a for address in addresses for a in ("--web.listen-address", address))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for address in addresses:
            _wait_metrics(f"http://{address}/metrics", f'path="{tmp_path}/a.pem"')
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_sigterm_ends_the_process_even_when_its_log_pipe_is_full(tmp_path: Path, root: Issued) -> None:
    """A log reader that stopped reading (a full stderr pipe) blocks every log line: SIGTERM must still end it."""
    config = _config(tmp_path, ("a.pem", root.cert_pem))
    port = free_port()
    proc = subprocess.Popen(
        [*EXPORTER, "--config", config, "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "debug"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,  # never read
    )
    try:
        _wait_metrics(f"http://127.0.0.1:{port}/metrics", f'path="{tmp_path}/a.pem"')
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # debug access lines until the pipe is full and the server stalls
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    response.read()
            except OSError:
                break
        else:
            raise AssertionError("the log pipe never filled")
        proc.send_signal(signal.SIGTERM)
        # Blocked on the full pipe, only the last-resort timer can end it: that it exits at all is the proof.
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
