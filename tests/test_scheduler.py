"""scheduler.py and store.py: scrapes read the last snapshot and never wait for a running scan."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from gunicorn_cert_exporter.model import FileResult
from gunicorn_cert_exporter.sources import files
from gunicorn_cert_exporter.sources.files import FileScanner
from gunicorn_cert_exporter.vocabulary import ScanKind
from tests.support import PKI, Issued, RunningExporter, StartExporter, eventually, free_port, write_pair


def test_scrape_during_a_slow_scan_of_10000_files_answers_from_the_last_snapshot(
    run_exporter: StartExporter, tmp_path: Path, pki: PKI, root: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "many"
    d.mkdir()
    pem = pki.leaf(root).cert_pem
    for i in range(10_000):
        (d / f"{i:05}.pem").write_bytes(pem)
    exporter: RunningExporter = run_exporter(f"files: [{{paths: ['{d}/*.pem']}}]")
    exporter.scan_now()
    assert sum(1 for k in exporter.metrics() if k.startswith("gunicorn_cert_file_up{")) == 10_000

    # Slow the next scan: it stops halfway until the test lets it go.
    entered, release = threading.Event(), threading.Event()
    real_scan_one = FileScanner.scan_one

    def slow_scan_one(self: FileScanner, item: files.Wanted, previous: FileResult | None = None) -> FileResult:
        if item.path.endswith("05000.pem"):
            entered.set()
            release.wait(60)
        return real_scan_one(self, item, previous)

    monkeypatch.setattr(FileScanner, "scan_one", slow_scan_one)
    (d / "00000.pem").unlink()
    worker = threading.Thread(target=exporter.scan_now)
    worker.start()
    try:
        assert entered.wait(30)
        started = time.monotonic()
        metrics = exporter.metrics()
        took = time.monotonic() - started
        assert took < 5, f"scrape waited {took:.1f}s for the scan"
        assert metrics[f'gunicorn_cert_file_up{{path="{d}/00000.pem"}}'] == 1  # the last completed snapshot
    finally:
        release.set()
        worker.join(60)
    assert f'gunicorn_cert_file_up{{path="{d}/00000.pem"}}' not in exporter.metrics()


def test_scheduler_runs_every_scan_at_start(run_exporter: StartExporter, tmp_path: Path, root: Issued) -> None:
    (tmp_path / "a.pem").write_bytes(root.cert_pem)
    exporter: RunningExporter = run_exporter(f"files: [{{paths: ['{tmp_path}/a.pem']}}]", schedule=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        kinds = {k for k in exporter.metrics() if k.startswith("gunicorn_cert_exporter_last_scan_timestamp_seconds")}
        if len(kinds) == 3:
            break
        time.sleep(0.1)
    assert kinds == {
        f'gunicorn_cert_exporter_last_scan_timestamp_seconds{{kind="{k}"}}' for k in ("files", "endpoints", "gunicorn")
    }


def test_a_scan_of_a_replaced_config_does_not_publish_when_it_ends(tmp_path: Path, root: Issued) -> None:
    from gunicorn_cert_exporter.config import load
    from gunicorn_cert_exporter.scanning.scans import Scans
    from gunicorn_cert_exporter.scanning.scheduler import Scheduler
    from gunicorn_cert_exporter.scanning.store import Store
    from gunicorn_cert_exporter.sources.endpoints import Prober

    (tmp_path / "old.pem").write_bytes(root.cert_pem)
    (tmp_path / "new.pem").write_bytes(root.cert_pem)
    store = Store()
    old = Scans(config=load(f"files: [{{paths: ['{tmp_path}/old.pem']}}]"), store=store, prober=Prober())
    new = Scans(config=load(f"files: [{{paths: ['{tmp_path}/new.pem']}}]"), store=store, prober=Prober())
    scheduler = Scheduler(old)
    new.scan_files()
    scheduler.replace(new)  # (not started: only the swap matters here)
    old.scan_files()  # the old config's scan, still running at the swap, ends now
    assert [f.path for f in store.snapshot.files] == [f"{tmp_path}/new.pem"]


def _stuck_on(monkeypatch: pytest.MonkeyPatch, suffix: str) -> tuple[list[float], threading.Event]:
    """Make reading any file named ``*suffix`` block like a hung NFS read, until released; count the attempts."""
    entered: list[float] = []
    release = threading.Event()
    real_scan_one = FileScanner.scan_one

    def scan_one(self: FileScanner, item: files.Wanted, previous: FileResult | None = None) -> FileResult:
        if item.path.endswith(suffix):
            entered.append(time.monotonic())
            release.wait(120)
        return real_scan_one(self, item, previous)

    monkeypatch.setattr(FileScanner, "scan_one", scan_one)
    return entered, release


def test_a_scan_stuck_in_a_read_publishes_at_its_deadline_and_the_next_run_starts_on_time(
    run_exporter: StartExporter, tmp_path: Path, root: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a-good.pem").write_bytes(root.cert_pem)
    (tmp_path / "b-stuck.pem").write_bytes(root.cert_pem)
    entered, release = _stuck_on(monkeypatch, "b-stuck.pem")
    config = f"scan: {{interval: 2s, jitter: 0}}\nfiles: [{{paths: ['{tmp_path}/*.pem']}}]"
    exporter: RunningExporter = run_exporter(config, schedule=True)
    try:
        stuck = f'gunicorn_cert_file_error{{path="{tmp_path}/b-stuck.pem",reason="scan_deadline"}}'
        good = f'gunicorn_cert_file_up{{path="{tmp_path}/a-good.pem"}}'
        metrics = eventually(lambda: m if (m := exporter.metrics()).get(stuck) else None, "the stuck file marked")
        assert metrics[good] == 1  # what the stuck scan had is published
        # The next run starts while the first is still stuck (max_instances would have skipped it).
        eventually(lambda: len(entered) >= 2, "a second run of the files scan")
        assert entered[1] - entered[0] < 10
    finally:
        release.set()


def test_a_config_reload_never_waits_for_a_stuck_scan(
    run_exporter: StartExporter, tmp_path: Path, root: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "stuck.pem").write_bytes(root.cert_pem)
    (tmp_path / "new.pem").write_bytes(root.cert_pem)
    entered, release = _stuck_on(monkeypatch, "stuck.pem")
    exporter: RunningExporter = run_exporter(f"files: [{{paths: ['{tmp_path}/stuck.pem']}}]", schedule=True)
    try:
        eventually(lambda: entered, "the files scan stuck")
        exporter.config_path.write_text(f"files: [{{paths: ['{tmp_path}/new.pem']}}]")
        started = time.monotonic()
        assert exporter.service.reload() == []
        assert time.monotonic() - started < 5
        eventually(
            lambda: exporter.metrics().get(f'gunicorn_cert_file_up{{path="{tmp_path}/new.pem"}}') == 1,
            "the new config's files",
        )
    finally:
        release.set()


def test_sigterm_ends_serve_within_5s_while_a_target_scan_is_stuck_on_a_fifo_pidfile(
    tmp_path: Path, pki: PKI, root: Issued
) -> None:
    leaf = pki.leaf(root)
    write_pair(leaf, tmp_path / "cert.pem", tmp_path / "key.pem")
    os.mkfifo(tmp_path / "app.pid")  # open() of a FIFO with no writer blocks
    port = free_port()
    (tmp_path / "config.yaml").write_text(
        f"gunicorn: [{{name: app, cert_file: {tmp_path}/cert.pem, key_file: {tmp_path}/key.pem,"
        f" endpoint: '127.0.0.1:{free_port()}', pidfile: {tmp_path}/app.pid}}]\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn_cert_exporter", "serve", "--config", str(tmp_path / "config.yaml"),
         "--web.listen-address", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        eventually(lambda: b"gunicorn_cert_exporter_last_scan_timestamp_seconds" in _fetch(url), "first scans")
        time.sleep(1)  # the gunicorn scan is blocked in open() of the FIFO by now
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        proc.wait(timeout=30)
        assert time.monotonic() - started < 5
        assert proc.returncode == 0
        assert proc.stderr is not None
        assert b"Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bytes(response.read())


def test_the_watchdog_of_an_old_run_never_abandons_a_newer_run(
    tmp_path: Path, root: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With jitter, the next run may begin before the stuck run's watchdog fires: the newer run still publishes."""
    from gunicorn_cert_exporter.config import load
    from gunicorn_cert_exporter.scanning.scans import Scans
    from gunicorn_cert_exporter.scanning.store import Store
    from gunicorn_cert_exporter.sources.endpoints import Prober

    (tmp_path / "a.pem").write_bytes(root.cert_pem)
    gates = [threading.Event(), threading.Event()]
    calls: list[int] = []
    real_scan_one = FileScanner.scan_one

    def gated(self: FileScanner, item: files.Wanted, previous: FileResult | None = None) -> FileResult:
        calls.append(1)
        gates[len(calls) - 1].wait(60)  # the first run blocks until the end; the second until released
        return real_scan_one(self, item, previous)

    monkeypatch.setattr(FileScanner, "scan_one", gated)
    store = Store()
    scans = Scans(config=load(f"files: [{{paths: ['{tmp_path}/a.pem']}}]"), store=store, prober=Prober())
    old = threading.Thread(target=scans.scan_files, daemon=True)
    old.start()
    eventually(lambda: len(calls) == 1, "the old run stuck")
    new = threading.Thread(target=scans.scan_files, daemon=True)
    new.start()
    eventually(lambda: len(calls) == 2, "the new run reading")
    scans.overrun(ScanKind.FILES, old.ident)  # the old run's watchdog fires late
    gates[1].set()
    new.join(30)
    assert [(f.path, f.error) for f in store.snapshot.files] == [(f"{tmp_path}/a.pem", None)]
    gates[0].set()
