"""APScheduler in the background: runs the scans of the current config, swaps them when the config changes.

APScheduler only launches: each run is a daemon thread of its own, watched by a daemon timer. A scan stuck in a
read the kernel won't interrupt (a FIFO, a hung NFS mount) is abandoned at its deadline and the next run starts on
time; a stuck thread never holds the next run (APScheduler's ``max_instances`` would skip it), a config reload
or the process exit.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from gunicorn_cert_exporter.scanning.scans import Scans
from gunicorn_cert_exporter.vocabulary import SCANNED, ScanKind

MAX_ABANDONED = 4
"""Threads of one kind still stuck after their deadline; past this a run is skipped, so threads stay bounded."""

_log = logging.getLogger("gunicorn_cert_exporter.scheduler")


class Scheduler:
    """Run the scans of the current config in the background; swap them when the config changes."""

    def __init__(self, scans: Scans) -> None:
        self._scheduler = BackgroundScheduler(
            timezone=timezone.utc, job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
        )
        self._scans = scans
        self._lock = threading.Lock()
        self._threads: dict[ScanKind, list[threading.Thread]] = {}

    @property
    def scans(self) -> Scans:
        """Return the scans now scheduled."""
        return self._scans

    def start(self) -> None:
        """Schedule every scan, the first run now."""
        self._schedule(self._scans)
        self._scheduler.start()

    def replace(self, scans: Scans) -> None:
        """Swap the scheduled scans for those of a new config; the new ones run at once, never waiting."""
        old, self._scans = self._scans, scans
        old.retire()
        self._schedule(scans)

    def shutdown(self) -> None:
        """Stop scheduling (if started); running scans are daemon threads and never hold the process."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def launch(self, scans: Scans, kind: ScanKind) -> threading.Thread | None:
        """Start one run of a scan in a daemon thread and watch its deadline; None if too many are stuck."""
        with self._lock:
            alive = [t for t in self._threads.get(kind, []) if t.is_alive()]
            if len(alive) >= MAX_ABANDONED:
                _log.warning("scan skipped: earlier runs are still stuck", extra={"kind": kind, "stuck": len(alive)})
                return None
            thread = threading.Thread(target=_run, args=(scans, kind), name=f"scan-{kind}", daemon=True)
            alive.append(thread)
            self._threads[kind] = alive
        thread.start()
        scan = scans.config.scan
        watchdog = threading.Timer(scan.deadline + scan.interval * 0.1, _watch, args=(scans, kind, thread))
        watchdog.daemon = True
        watchdog.start()
        return thread

    def _schedule(self, scans: Scans) -> None:
        interval = scans.config.scan.interval
        jitter = int(interval * scans.config.scan.jitter) or None
        now = datetime.now(timezone.utc)
        for kind in SCANNED:
            self._scheduler.add_job(
                self.launch,
                IntervalTrigger(seconds=interval, jitter=jitter),
                args=(scans, kind),
                id=kind,
                name=f"scan {kind}",
                replace_existing=True,
                next_run_time=now,
            )


def _run(scans: Scans, kind: ScanKind) -> None:
    try:
        scans.job(kind)()
    except Exception:  # noqa: BLE001  (a bug in one scan kind is logged with its traceback, never silent)
        _log.exception("scan failed", extra={"kind": kind})


def _watch(scans: Scans, kind: ScanKind, thread: threading.Thread) -> None:
    if thread.is_alive():
        scans.overrun(kind, thread.ident)
