"""scheduler.py and store.py: scrapes read the last snapshot and never wait for a running scan."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from gunicorn_cert_exporter.sources import files
from gunicorn_cert_exporter.sources.files import FileScanner
from tests.support import PKI, Issued, RunningExporter, StartExporter


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

    def slow_scan_one(self: FileScanner, item: files.Wanted, previous: object = None) -> object:
        if item.path.endswith("05000.pem"):
            entered.set()
            release.wait(60)
        return real_scan_one(self, item, previous)  # type: ignore[arg-type]

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
