"""The scheduler's watchdogs (scanning/scheduler.py): one thread per scan kind; a replaced config's runs left alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from gunicorn_cert_exporter.config import EndpointConfig, load
from gunicorn_cert_exporter.model import EndpointResult, FileReason, FileResult
from gunicorn_cert_exporter.scanning.scans import Scans
from gunicorn_cert_exporter.scanning.scheduler import Scheduler
from gunicorn_cert_exporter.scanning.store import Store
from gunicorn_cert_exporter.sources import files
from gunicorn_cert_exporter.sources.endpoints import Prober
from gunicorn_cert_exporter.sources.files import FileScanner
from gunicorn_cert_exporter.vocabulary import SCANNED as KINDS
from gunicorn_cert_exporter.vocabulary import ScanKind
from tests.support import Issued, eventually


class _StuckProbes:
    """An endpoints prober whose scans hang until released; counts what the watchdog asks of it."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = 0
        self.abandoned = 0

    def probe_all(
        self, configs: Sequence[EndpointConfig], *, concurrency: int, deadline: float
    ) -> tuple[EndpointResult, ...]:
        self.entered += 1
        self.release.wait(60)
        return ()

    def abandon(self) -> None:
        self.abandoned += 1


@pytest.fixture
def probes() -> Iterator[_StuckProbes]:
    stuck = _StuckProbes()
    yield stuck
    stuck.release.set()


def test_one_watchdog_thread_per_kind_however_many_runs_are_launched() -> None:
    """A timer per launch kept a thread alive for each run's deadline: a reload flood made thousands."""
    scans = Scans(config=load("{}"), store=Store(), prober=Prober())  # nothing to scan: each run ends at once
    scheduler = Scheduler(scans)
    before = threading.active_count()
    try:
        for _ in range(50):
            for kind in KINDS:
                run = scheduler.launch(scans, kind)
                assert run is not None
                run.join(30)
        watchdogs = [t.name for t in threading.enumerate() if t.name.startswith("watchdog-")]
        assert sorted(watchdogs) == sorted(f"watchdog-{kind}" for kind in KINDS)
        assert threading.active_count() <= before + len(KINDS)
    finally:
        scheduler.shutdown()


def test_the_watchdog_of_a_replaced_config_never_abandons_the_shared_probes(
    tmp_path: Path, root: Issued, probes: _StuckProbes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of a replaced config past its deadline is left alone; a run of the config in force is abandoned."""
    (tmp_path / "a.pem").write_bytes(root.cert_pem)
    text = f"scan: {{interval: 1s, jitter: 0}}\nfiles: [{{paths: ['{tmp_path}/a.pem']}}]"
    store = Store()
    old, new = (Scans(config=load(text), store=store, prober=Prober(), endpoint_prober=probes) for _ in range(2))
    scheduler = Scheduler(old)
    release_files = threading.Event()
    real_scan_one = FileScanner.scan_one

    def stuck_scan_one(self: FileScanner, item: files.Wanted, previous: FileResult | None = None) -> FileResult:
        release_files.wait(60)
        return real_scan_one(self, item, previous)

    try:
        launched = time.monotonic()
        assert scheduler.launch(old, ScanKind.ENDPOINTS) is not None  # stuck past its 0.9 s deadline
        eventually(lambda: probes.entered == 1, "the old config's endpoints scan stuck")
        scheduler.replace(new)
        eventually(lambda: time.monotonic() > launched + 1.0, "the old run's deadline passed")
        # The control: a stuck run of the config in force, launched after that deadline, is abandoned at its own.
        monkeypatch.setattr(FileScanner, "scan_one", stuck_scan_one)
        assert scheduler.launch(new, ScanKind.FILES) is not None
        overdue = [(f"{tmp_path}/a.pem", FileReason.SCAN_DEADLINE)]
        eventually(lambda: [(f.path, f.error) for f in store.snapshot.files] == overdue, "the control abandoned")
        assert probes.abandoned == 0  # the replaced config's stuck endpoints run was left alone
        assert scheduler.launch(new, ScanKind.ENDPOINTS) is not None
        eventually(lambda: probes.abandoned == 1, "the current config's stuck endpoints run abandoned")
    finally:
        release_files.set()
        probes.release.set()
        scheduler.shutdown()
