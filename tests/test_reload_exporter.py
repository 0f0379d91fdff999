"""Reload safety as operators run the exporter: real `serve` processes, kill -9, SIGHUP, SIGTERM, real Gunicorn."""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import PKI, ExporterProcess, Gunicorn, Issued, eventually, start_exporter, write_chain

pytestmark = pytest.mark.integration  # every test here starts a process or an external tool

HOUR = 3600


@pytest.fixture
def exporters() -> Iterator[list[ExporterProcess]]:
    started: list[ExporterProcess] = []
    yield started
    for exporter in started:
        exporter.stop()


@pytest.fixture
def gunicorn_asgi(tmp_path: Path, pki: PKI, root: Issued) -> Iterator[Gunicorn]:
    served = tmp_path / "served"
    served.mkdir()
    cert, key = write_chain(served, "tls", pki.leaf(root))
    server = Gunicorn(served, worker_class="asgi", cert=cert, key=key)
    yield server
    server.stop()


def _target(name: str, *, cert: Path, key: Path, endpoint: str, pidfile: str, reload: str = "") -> str:
    return (
        f"  - name: {name}\n    cert_file: {cert}\n    key_file: {key}\n    endpoint: {endpoint}\n"
        f"    pidfile: {pidfile}\n" + (f"    reload: {reload}\n" if reload else "")
    )


def _scans_after(exporter: ExporterProcess, kind: str, since: float) -> float | None:
    stamp = exporter.metrics().get(f'gunicorn_cert_exporter_last_scan_timestamp_seconds{{kind="{kind}"}}', 0.0)
    return stamp if stamp > since else None


def _hups(server: Gunicorn) -> int:
    return server.log.read_text().lower().count("handling signal: hup")


def test_a_crash_loop_with_persisting_drift_sends_at_most_one_hup(
    tmp_path: Path, pki: PKI, root: Issued, gunicorn_asgi: Gunicorn, exporters: list[ExporterProcess]
) -> None:
    """8 kill -9 restarts, drift that a HUP can't cure, a cert_file mtime an hour ahead: one HUP in all."""
    watched = tmp_path / "watched"
    watched.mkdir()
    cert, key = write_chain(watched, "tls", pki.leaf(root))  # not what Gunicorn serves: the drift persists
    future = time.time() + HOUR
    os.utime(cert, (future, future))
    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(
        "scan: {interval: 1s, jitter: 0%}\ngunicorn:\n"
        + _target(
            "api",
            cert=cert,
            key=key,
            endpoint=gunicorn_asgi.address,
            pidfile=str(gunicorn_asgi.pidfile),
            reload="{enabled: true, after: 0s, cooldown: 15m, max_per_hour: 2, verify_timeout: 2s}",
        )
    )
    for _ in range(8):
        exporter = ExporterProcess(config, cwd=tmp_path, storage=state, log=tmp_path / "exporter.log")
        exporters.append(exporter)
        drift = 'gunicorn_cert_fingerprint_mismatch{address="127.0.0.1",target="api"}'
        seen = eventually(lambda: exporter.metrics().get(drift) == 1.0 and time.time(), "drift", timeout=60)  # noqa: B023
        eventually(lambda: _scans_after(exporter, "gunicorn", seen), "a scan after the drift was seen")  # noqa: B023
        exporter.kill()
    assert _hups(gunicorn_asgi) == 1
    assert "reload" in (tmp_path / "exporter.log").read_text()


def test_a_fifo_pidfile_stalls_no_other_target_and_sigterm_still_exits(
    tmp_path: Path, pki: PKI, root: Issued, gunicorn_asgi: Gunicorn, exporters: list[ExporterProcess]
) -> None:
    fifo = tmp_path / "fifo.pid"
    os.mkfifo(fifo)
    cert, key = write_chain(tmp_path, "tls", pki.leaf(root))
    good = _target("good", cert=cert, key=key, endpoint=gunicorn_asgi.address, pidfile=str(gunicorn_asgi.pidfile))
    stuck = _target("stuck", cert=cert, key=key, endpoint=gunicorn_asgi.address, pidfile=str(fifo))
    config = tmp_path / "config.yaml"
    config.write_text("scan: {interval: 1s, jitter: 0%}\ngunicorn:\n" + stuck + good)
    exporter = ExporterProcess(config, cwd=tmp_path)
    exporters.append(exporter)

    def both_published() -> bool:
        samples = exporter.metrics()
        return (
            samples.get('gunicorn_cert_master_up{target="good"}') == 1.0
            and samples.get('gunicorn_cert_master_error{reason="pidfile_invalid",target="stuck"}') == 1.0
        )

    eventually(both_published, "both targets scanned")
    first = exporter.metrics()['gunicorn_cert_exporter_last_scan_timestamp_seconds{kind="gunicorn"}']
    eventually(lambda: _scans_after(exporter, "gunicorn", first), "scans to go on")
    config.write_text("scan: {interval: 1s, jitter: 0%}\ngunicorn:\n" + good)
    # POST /-/reload rather than SIGHUP: the serve loop waits in Event.wait() without a timeout, so a SIGHUP that
    # the kernel delivers to another thread waits for the next signal to the main thread (reported to the lead).
    request = urllib.request.Request(exporter.url + "/-/reload", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
    eventually(lambda: not any('target="stuck"' in k for k in exporter.metrics()), "the FIFO target to leave")
    after = exporter.metrics()['gunicorn_cert_exporter_last_scan_timestamp_seconds{kind="gunicorn"}']
    eventually(lambda: _scans_after(exporter, "gunicorn", after), "scans to go on after the config reload")
    exporter.process.terminate()
    assert exporter.process.wait(timeout=60) == 0
    log = exporter.log.read_text()
    # Server, scheduler and probes stopped within the grace period: nothing waited for the FIFO target's scan.
    assert "shutting down" in log and "shutdown grace period over" not in log


def test_a_relative_pidfile_resolves_against_the_config_file(gunicorn_asgi: Gunicorn) -> None:
    """The test runs from the repository: a pidfile relative to the working directory would not be found."""
    served = gunicorn_asgi.pidfile.parent
    assert Path.cwd() != served
    config = served / "config.yaml"
    target = _target(
        "api", cert=Path("tls.pem"), key=Path("tls.key"), endpoint=gunicorn_asgi.address, pidfile="gunicorn.pid"
    )
    config.write_text("gunicorn:\n" + target)
    exporter = start_exporter(config)
    try:
        exporter.scan_now()
        samples = exporter.metrics()
    finally:
        exporter.close()
    assert samples['gunicorn_cert_master_up{target="api"}'] == 1.0
    assert samples[f'gunicorn_cert_file_up{{path="{served / "tls.pem"}"}}'] == 1.0


def test_reload_without_storage_path_warns_at_start(
    tmp_path: Path, pki: PKI, root: Issued, exporters: list[ExporterProcess]
) -> None:
    cert, key = write_chain(tmp_path, "tls", pki.leaf(root))
    config = tmp_path / "config.yaml"
    target = _target("api", cert=cert, key=key, endpoint="127.0.0.1:9", pidfile="x.pid", reload="{enabled: true}")
    config.write_text("gunicorn:\n" + target)
    exporter = ExporterProcess(config, cwd=tmp_path)
    exporters.append(exporter)
    eventually(lambda: "storage.path" in exporter.log.read_text(), "the warning")
    with_storage = ExporterProcess(config, cwd=tmp_path, storage=tmp_path, log=tmp_path / "with.log")
    exporters.append(with_storage)
    eventually(with_storage.metrics, "the exporter with --storage.path to serve")
    assert "storage.path" not in with_storage.log.read_text()
