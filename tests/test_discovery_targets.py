"""Discovered Gunicorn masters as targets of a running exporter: real Gunicorn 27 on loopback, no setproctitle.

The three ways a user tells Gunicorn its certificate (flags, GUNICORN_CMD_ARGS, gunicorn.conf.py) are covered on
20.1 and 27 by the version suite (tests/test_gunicorn_versions.py); here: what discovery must never do (a fake
gunicorn, a config file that would run code), a master that starts or dies under the exporter, a configured
target winning, and the reload policy of discovered targets.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gunicorn_cert_exporter.sources.discovery import find_masters
from gunicorn_cert_exporter.targets.discover import Discovery
from tests.support import (
    PKI,
    Issued,
    RunningExporter,
    StartExporter,
    as_nobody,
    eventually,
    free_port,
    gunicorn_python,
    stop_process,
    unavailable,
    write_pair,
)
from tests.support.gunicorn import FAKE_GUNICORN
from tests.test_discovery import Launched

pytestmark = pytest.mark.integration

DISCOVERY = "discovery: {gunicorn: true, forget_after: 1h}\n"
VERSION = "27.0.1"  # the asgi worker (24+) loads its certificate once per worker


def target_info(exporter: RunningExporter) -> dict[str, dict[str, str]]:
    """Return the labels of gunicorn_cert_target_info by target name."""
    status, body = exporter.get("/metrics")
    assert status == 200
    return {
        sample.labels["target"]: dict(sample.labels)
        for family in text_string_to_metric_families(body.decode())
        if family.name == "gunicorn_cert_target_info"
        for sample in family.samples
    }


def by_cert(exporter: RunningExporter, cert: Path) -> list[dict[str, str]]:
    """Return every target whose cert_file is ``cert``."""
    return [labels for labels in target_info(exporter).values() if labels["cert_file"] == str(cert)]


@pytest.fixture
def launched() -> Iterator[list[Launched]]:
    started: list[Launched] = []
    yield started
    for gunicorn in started:
        stop_process(gunicorn.process)


def _pair(directory: Path, leaf: Issued) -> Path:
    directory.mkdir()
    write_pair(leaf, directory / "cert.pem", directory / "key.pem")
    return directory


def _flags(directory: Path, *extra: str) -> list[str]:
    return ["--certfile", str(directory / "cert.pem"), "--keyfile", str(directory / "key.pem"), *extra]


def test_a_script_named_gunicorn_told_tls_flags_is_no_target(
    run_exporter: StartExporter, tmp_path: Path, pki: PKI
) -> None:
    """A forking TLS server named ``gunicorn``, with Gunicorn's very flags on its command line, is not Gunicorn."""
    directory = _pair(tmp_path / "fake", pki.leaf(pki.ca("Fake CA")))
    script = directory / "bin" / "gunicorn"
    script.parent.mkdir()
    source = FAKE_GUNICORN.replace("FORK", "True")
    script.write_text(source.replace("sys.argv[1], sys.argv[2], int(sys.argv[3])", "sys.argv[2], sys.argv[4], PORT"))
    port = free_port()
    script.write_text(script.read_text().replace("PORT", str(port)))
    command = [sys.executable, str(script), *_flags(directory, "-b", f"127.0.0.1:{port}"), "app:app"]
    fake = subprocess.Popen(command, cwd=directory, start_new_session=True)
    try:
        eventually(lambda: psutil.Process(fake.pid).children() or None, "the fake to fork its 'worker'")
        exporter = run_exporter(DISCOVERY)
        exporter.scan_now()
        assert "gunicorn_cert_discovered_masters{}" in exporter.metrics()  # discovery ran
        assert by_cert(exporter, directory / "cert.pem") == []
        assert fake.poll() is None, "never signalled"
    finally:
        os.killpg(fake.pid, signal.SIGKILL)
        fake.wait()


def test_a_master_that_starts_is_found_by_the_next_scan_and_one_that_dies_stays_down(
    run_exporter: StartExporter, tmp_path: Path, pki: PKI, launched: list[Launched]
) -> None:
    exporter = run_exporter(DISCOVERY)
    exporter.scan_now()
    directory = _pair(tmp_path / "late", pki.leaf(pki.ca("Late CA")))
    assert by_cert(exporter, directory / "cert.pem") == []
    late = Launched(directory, _flags(directory, "-b", "127.0.0.1:PORT"), python=gunicorn_python(VERSION))
    launched.append(late)
    exporter.scan_now()
    [info] = by_cert(exporter, directory / "cert.pem")
    name = info["target"]
    assert (name, info["source"]) == (f"gunicorn-{late.port}", "discovery")
    samples = exporter.metrics()
    assert samples[f'gunicorn_cert_master_up{{target="{name}"}}'] == 1
    assert samples[f'gunicorn_cert_fingerprint_mismatch{{address="127.0.0.1",target="{name}"}}'] == 0
    late.process.kill()
    late.process.wait()
    for _ in range(2):  # still listed, down, scan after scan (forget_after is 1h)
        exporter.scan_now()
        assert [i["target"] for i in by_cert(exporter, directory / "cert.pem")] == [name]
        assert exporter.metrics()[f'gunicorn_cert_master_up{{target="{name}"}}'] == 0


def test_a_computed_certfile_is_reported_and_never_executed(
    run_exporter: StartExporter, tmp_path: Path, pki: PKI, launched: list[Launched]
) -> None:
    directory = _pair(tmp_path / "computed", pki.leaf(pki.ca("Computed CA")))
    conf = (
        "import os\n"
        'open(f"executed-by-{os.getpid()}", "w").close()\n'
        'certfile = os.environ.get("CERT", "cert.pem")\n'
        'keyfile = "key.pem"\n'
        'bind = "127.0.0.1:PORT"\n'
    )
    gunicorn = Launched(directory, [], conf=conf, python=gunicorn_python(VERSION))
    launched.append(gunicorn)
    exporter = run_exporter(DISCOVERY)
    exporter.scan_now()
    name = f"gunicorn-{gunicorn.port}"
    assert exporter.metrics()[f'gunicorn_cert_discovery_error{{reason="config_not_literal",target="{name}"}}'] == 1
    assert name not in target_info(exporter)
    # Gunicorn ran the file (it writes its marker when executed); the exporter, which read it, did not.
    assert sorted(p.name for p in directory.glob("executed-by-*")) == [f"executed-by-{gunicorn.process.pid}"]
    status, body = exporter.get("/api/v1/status")
    assert status == 200 and b'"reason": "config_not_literal"' in body


def test_a_configured_target_wins_over_discovery(
    run_exporter: StartExporter, tmp_path: Path, pki: PKI, launched: list[Launched]
) -> None:
    directory = _pair(tmp_path / "mine", pki.leaf(pki.ca("Mine CA")))
    gunicorn = Launched(directory, _flags(directory, "-b", "127.0.0.1:PORT"), python=gunicorn_python(VERSION))
    launched.append(gunicorn)
    configured = (
        f"gunicorn: [{{name: mine, cert_file: {directory}/cert.pem, key_file: {directory}/key.pem,"
        f" endpoint: '127.0.0.1:{gunicorn.port}', pid: {gunicorn.process.pid}}}]\n"
    )
    exporter = run_exporter(configured + DISCOVERY)
    for _ in range(2):
        exporter.scan_now()
        assert [(i["target"], i["source"]) for i in by_cert(exporter, directory / "cert.pem")] == [("mine", "config")]
    assert exporter.metrics()['gunicorn_cert_master_up{target="mine"}'] == 1


def _served(port: int) -> str:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, context.wrap_socket(sock) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def test_an_asgi_master_drifts_without_a_hup_until_discovery_reload_allows_one(
    run_exporter: StartExporter, tmp_path: Path, pki: PKI, launched: list[Launched]
) -> None:
    ca = pki.ca("Rotation CA")
    directory = _pair(tmp_path / "asgi", pki.leaf(ca))
    args = _flags(directory, "-b", "127.0.0.1:PORT", "-k", "asgi", "-n", "rotating")
    gunicorn = Launched(
        directory, args, python=gunicorn_python(VERSION), app="gunicorn_cert_exporter.demo_app:asgi_app"
    )
    launched.append(gunicorn)
    exporter = run_exporter(DISCOVERY)
    exporter.scan_now()
    assert target_info(exporter)["rotating"]["worker_class"] == "asgi"
    drift = 'gunicorn_cert_fingerprint_mismatch{address="127.0.0.1",target="rotating"}'
    assert exporter.metrics()[drift] == 0
    workers = {c.pid for c in psutil.Process(gunicorn.process.pid).children()}

    new = pki.leaf(ca)
    write_pair(new, directory / "next-cert.pem", directory / "next-key.pem")
    os.replace(directory / "next-key.pem", directory / "key.pem")
    os.replace(directory / "next-cert.pem", directory / "cert.pem")
    for _ in range(2):  # the decision is taken every scan: reload is off for discovered targets
        exporter.scan_now()
        samples = exporter.metrics()
        assert samples[drift] == 1
        assert samples['gunicorn_cert_reload_signals_total{target="rotating"}'] == 0
    assert {c.pid for c in psutil.Process(gunicorn.process.pid).children()} == workers, "no HUP"

    exporter.config_path.write_text(
        "discovery: {gunicorn: true, forget_after: 1h, reload: {enabled: true, after: 0s, verify_timeout: 30s}}\n"
    )
    assert exporter.service.reload() == []
    exporter.scan_now()
    assert exporter.metrics()['gunicorn_cert_reload_signals_total{target="rotating"}'] == 1
    eventually(lambda: _served(gunicorn.port) == new.fingerprint or None, "the new leaf served")
    exporter.scan_now()
    samples = exporter.metrics()
    assert samples[drift] == 0
    assert samples['gunicorn_cert_reload_signals_total{target="rotating"}'] == 1  # one HUP, not one per scan


def test_a_master_of_another_user_is_reported_once_as_permission_denied(
    tmp_path: Path, pki: PKI, launched: list[Launched]
) -> None:
    """Seen by an exporter running as another user (nobody), a master is one permission_denied error, no target."""
    if os.getuid() != 0:
        unavailable("not root: can't run discovery as another user", ci_must="run the suite as root (CI does)")
    directory = _pair(tmp_path / "theirs", pki.leaf(pki.ca("Theirs CA")))
    gunicorn = Launched(directory, _flags(directory, "-b", "127.0.0.1:PORT"), python=gunicorn_python(VERSION))
    launched.append(gunicorn)

    def discover() -> str:
        result = Discovery(forget_after=60).update(find_masters(), configured=(), now=0.0, server_name=lambda _: None)
        mine = [(e.target, e.reason) for e in result.errors if e.target == f"gunicorn-pid-{gunicorn.process.pid}"]
        theirs = [t.name for t in result.targets if t.pid == gunicorn.process.pid]
        return json.dumps({"errors": mine, "targets": theirs})

    seen = json.loads(as_nobody(discover))
    assert seen == {"errors": [[f"gunicorn-pid-{gunicorn.process.pid}", "permission_denied"]], "targets": []}
