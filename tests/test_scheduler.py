"""scheduler.py and store.py: scrapes read the last snapshot and never wait for a running scan."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from gunicorn_cert_exporter.model import FileResult
from gunicorn_cert_exporter.scanning.scans import Scans
from gunicorn_cert_exporter.scanning.scheduler import _Watchdog
from gunicorn_cert_exporter.sources import files
from gunicorn_cert_exporter.sources.files import FileScanner
from gunicorn_cert_exporter.vocabulary import ScanKind
from tests.support.exporter import RunningExporter, StartExporter
from tests.support.pki import PKI, Issued
from tests.support.processes import free_port
from tests.support.tls import TLSServer
from tests.support.waiting import eventually


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
    gone = f'\ngunicorn_cert_file_up{{path="{d}/00000.pem"}} 1.0\n'.encode()  # (text, not parsed: 10,000 series)
    status, body = exporter.get("/metrics")
    assert status == 200 and body.count(b"\ngunicorn_cert_file_up{") == 10_000 and gone in body

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
        status, body = exporter.get("/metrics")
        # The whole response arrived while the scan was provably still held halfway: a scrape that waited for the
        # scan could not have been answered before ``release`` (set only below), and would show the new snapshot.
        assert worker.is_alive() and not release.is_set()
        assert status == 200 and gone in body  # the last completed snapshot
    finally:
        release.set()
        worker.join(60)
    status, body = exporter.get("/metrics")
    assert status == 200 and gone not in body and body.count(b"\ngunicorn_cert_file_up{") == 9_999


def test_scheduler_runs_every_scan_at_start(run_exporter: StartExporter, tmp_path: Path, root: Issued) -> None:
    (tmp_path / "a.pem").write_bytes(root.cert_pem)
    exporter: RunningExporter = run_exporter(f"files: [{{paths: ['{tmp_path}/a.pem']}}]", schedule=True)

    def scanned() -> set[str] | None:
        kinds = {k for k in exporter.metrics() if k.startswith("gunicorn_cert_exporter_last_scan_timestamp_seconds")}
        return kinds if len(kinds) == 3 else None

    assert eventually(scanned, "every kind of scan") == {
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


@dataclass(frozen=True)
class Stuck:
    """Reads of a file that block like a hung NFS read until ``release``: when each began, and how many ended."""

    entered: list[float]
    left: list[float]
    release: threading.Event


def _stuck_on(monkeypatch: pytest.MonkeyPatch, suffix: str) -> Stuck:
    """Make reading any file named ``*suffix`` block like a hung NFS read, until released; count the attempts."""
    stuck = Stuck([], [], threading.Event())
    real_scan_one = FileScanner.scan_one

    def scan_one(self: FileScanner, item: files.Wanted, previous: FileResult | None = None) -> FileResult:
        if item.path.endswith(suffix):
            stuck.entered.append(time.monotonic())
            stuck.release.wait(120)
            stuck.left.append(time.monotonic())
        return real_scan_one(self, item, previous)

    monkeypatch.setattr(FileScanner, "scan_one", scan_one)
    return stuck


def test_a_scan_stuck_in_a_read_publishes_at_its_deadline_and_the_next_run_starts_on_time(
    run_exporter: StartExporter, tmp_path: Path, root: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a-good.pem").write_bytes(root.cert_pem)
    (tmp_path / "b-stuck.pem").write_bytes(root.cert_pem)
    reads = _stuck_on(monkeypatch, "b-stuck.pem")
    entered, release = reads.entered, reads.release
    config = f"scan: {{interval: 2s, jitter: 0}}\nfiles: [{{paths: ['{tmp_path}/*.pem']}}]"
    exporter: RunningExporter = run_exporter(config, schedule=True)
    try:
        stuck = f'gunicorn_cert_file_error{{path="{tmp_path}/b-stuck.pem",reason="scan_deadline"}}'
        good = f'gunicorn_cert_file_up{{path="{tmp_path}/a-good.pem"}}'
        metrics = eventually(lambda: m if (m := exporter.metrics()).get(stuck) else None, "the stuck file marked")
        assert metrics[good] == 1  # what the stuck scan had is published
        # The next run starts while the first is still stuck (max_instances would have skipped it).
        eventually(lambda: len(entered) >= 2, "a second run of the files scan")
        assert not reads.left  # the second run began while the first was still stuck in its read
    finally:
        release.set()


def test_a_reload_during_a_launch_still_scans_the_new_config_at_once(
    run_exporter: StartExporter, tmp_path: Path, root: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    """APScheduler skips a job due while its last launch still counts as running (``max_instances``): a reload at
    that moment left the new config's first scan an interval (here an hour) away. Seen under load, made sure here."""
    (tmp_path / "old.pem").write_bytes(root.cert_pem)
    (tmp_path / "new.pem").write_bytes(root.cert_pem)
    test_thread, held, release = threading.current_thread(), threading.Event(), threading.Event()
    real_watch = _Watchdog.watch

    def slow_watch(self: _Watchdog, scans: Scans, run: threading.Thread, *, after: float) -> None:
        if self._kind == ScanKind.FILES and threading.current_thread() is not test_thread and not held.is_set():
            # APScheduler's launch of files, once: it counts as running until released
            held.set()
            release.wait(60)
        real_watch(self, scans, run, after=after)

    monkeypatch.setattr(_Watchdog, "watch", slow_watch)
    exporter = run_exporter(
        f"scan: {{interval: 1s, jitter: 0}}\nfiles: [{{paths: ['{tmp_path}/old.pem']}}]", schedule=True
    )
    try:
        eventually(held.is_set, "an interval launch under way")
        exporter.config_path.write_text(f"scan: {{interval: 1h}}\nfiles: [{{paths: ['{tmp_path}/new.pem']}}]")
        assert exporter.service.reload() == []
        eventually(
            lambda: exporter.metrics().get(f'gunicorn_cert_file_up{{path="{tmp_path}/new.pem"}}') == 1,
            "the new config's files, scanned at once",
            timeout=30,
        )
    finally:
        release.set()
        exporter.close()


def test_a_config_reload_never_waits_for_a_stuck_scan(
    run_exporter: StartExporter, tmp_path: Path, root: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "stuck.pem").write_bytes(root.cert_pem)
    (tmp_path / "new.pem").write_bytes(root.cert_pem)
    stuck = _stuck_on(monkeypatch, "stuck.pem")
    exporter: RunningExporter = run_exporter(f"files: [{{paths: ['{tmp_path}/stuck.pem']}}]", schedule=True)
    try:
        eventually(lambda: stuck.entered, "the files scan stuck")
        exporter.config_path.write_text(f"files: [{{paths: ['{tmp_path}/new.pem']}}]")
        assert exporter.service.reload() == []
        assert not stuck.left  # reload returned while the scan was still stuck: it did not wait for it
        eventually(
            lambda: exporter.metrics().get(f'gunicorn_cert_file_up{{path="{tmp_path}/new.pem"}}') == 1,
            "the new config's files",
        )
    finally:
        stuck.release.set()


@pytest.mark.integration
def test_sigterm_ends_serve_while_a_scan_is_stuck_on_a_stalled_endpoint(
    tmp_path: Path, tls_server: type[TLSServer]
) -> None:
    """A probe stuck for its 10-minute timeout holds the endpoints scan; SIGTERM must not wait for it."""
    stall = tls_server("127.0.0.1", mode="stall")
    port = free_port()
    (tmp_path / "config.yaml").write_text(f"endpoints: [{{address: '{stall.address}', timeout: 10m}}]\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn_cert_exporter", "serve", "--config", str(tmp_path / "config.yaml"),
         "--web.listen-address", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        eventually(lambda: b"gunicorn_cert_exporter_last_scan_timestamp_seconds" in _fetch(url), "first scans")
        eventually(lambda: stall.held, "the endpoints scan stuck in its probe")  # held for 10 minutes from now
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)  # (the last-resort timer ends it after 4.5 s whatever blocks: see the log instead)
        assert proc.returncode == 0
        assert proc.stderr is not None
        log = proc.stderr.read()
        # It stopped its server, scheduler and probes within the grace period: it did not wait for the stuck scan.
        assert b"shutting down" in log and b"shutdown grace period over" not in log
        assert b"Traceback" not in log
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
