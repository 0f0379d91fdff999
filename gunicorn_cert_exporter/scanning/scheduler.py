"""APScheduler in the background: runs the scans of the current config, swaps them when the config changes.

APScheduler only launches: each run is a daemon thread of its own. One watchdog thread per scan kind watches the
kind's latest run: a scan stuck in a read the kernel won't interrupt (a FIFO, a hung NFS mount) is abandoned at its
deadline and the next run starts on time; a stuck thread never holds the next run (APScheduler's ``max_instances``
would skip it), a config reload or the process exit. A run of a replaced config is never abandoned: its scans are
retired already, and abandoning would reach what the current config's scans share (the probe process).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

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
        self._watchdogs = {kind: _Watchdog(kind, self._abandon) for kind in SCANNED}

    @property
    def scans(self) -> Scans:
        """Return the scans now scheduled."""
        return self._scans

    def start(self) -> None:
        """Schedule every scan, the first run now."""
        self._scheduler.start()
        self._schedule(self._scans)

    def replace(self, scans: Scans) -> None:
        """Swap the scheduled scans for those of a new config; the new ones run at once, never waiting."""
        with self._lock:  # a watchdog abandons only runs of the scans in force, checked under this lock
            old, self._scans = self._scans, scans
        old.retire()
        self._schedule(scans)

    def shutdown(self) -> None:
        """Stop scheduling (if started) and watching; running scans are daemon threads and never hold the process."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        for watchdog in self._watchdogs.values():
            watchdog.stop()

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
        self._watchdogs[kind].watch(scans, thread, after=scan.deadline + scan.interval * 0.1)
        return thread

    def _abandon(self, scans: Scans, kind: ScanKind, thread: threading.Thread) -> None:
        """Abandon a run past its deadline if it still runs and its config is still in force."""
        with self._lock:
            if thread.is_alive() and scans is self._scans:
                scans.overrun(kind, thread.ident)

    def _schedule(self, scans: Scans) -> None:
        """Once started, launch every scan of ``scans`` now, then let APScheduler launch them every interval.

        The first runs are launched here, not by APScheduler: its ``max_instances`` would skip a run due now while
        the replaced config's launch of that kind still counts as running, and the new config would wait a whole
        interval for its first scan.
        """
        interval = scans.config.scan.interval
        jitter = int(interval * scans.config.scan.jitter) or None
        first = datetime.now(timezone.utc) + timedelta(seconds=interval)
        for kind in SCANNED:
            self._scheduler.add_job(
                self.launch,
                IntervalTrigger(seconds=interval, jitter=jitter),
                args=(scans, kind),
                id=kind,
                name=f"scan {kind}",
                replace_existing=True,
                next_run_time=first,
            )
        if self._scheduler.running:
            for kind in SCANNED:
                self.launch(scans, kind)


class _Watchdog:
    """One thread for one scan kind: at the deadline of the kind's latest run, hand that run to ``abandon``.

    Only the latest run is watched: an earlier one no longer owns the kind once a newer run has begun, so there is
    nothing left to abandon. The thread starts with the first run and lives as long as the scheduler.
    """

    def __init__(self, kind: ScanKind, abandon: Callable[[Scans, ScanKind, threading.Thread], None]) -> None:
        self._kind, self._abandon = kind, abandon
        self._changed = threading.Condition()
        self._watched: tuple[float, Scans, threading.Thread] | None = None
        self._stopped = False
        self._thread: threading.Thread | None = None

    def watch(self, scans: Scans, run: threading.Thread, *, after: float) -> None:
        """Watch ``run`` of ``scans`` (in place of the kind's earlier run) for ``after`` seconds from now."""
        with self._changed:
            if self._stopped:
                return
            self._watched = (time.monotonic() + after, scans, run)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"watchdog-{self._kind}", daemon=True)
                self._thread.start()
            self._changed.notify()

    def stop(self) -> None:
        """End the thread; nothing is abandoned from now on."""
        with self._changed:
            self._stopped, self._watched = True, None
            self._changed.notify()

    def _loop(self) -> None:
        while (due := self._next_due()) is not None:
            scans, run = due
            try:
                self._abandon(scans, self._kind, run)
            except Exception:  # noqa: BLE001  (a bug while abandoning must not end the kind's watchdog)
                _log.exception("abandoning an overrun scan failed", extra={"kind": self._kind})

    def _next_due(self) -> tuple[Scans, threading.Thread] | None:
        """Wait for the watched run's deadline and return it; None once stopped."""
        with self._changed:
            while not self._stopped:
                if self._watched is None:
                    self._changed.wait()
                    continue
                deadline, scans, run = self._watched
                left = deadline - time.monotonic()
                if left > 0:
                    self._changed.wait(left)
                    continue
                self._watched = None
                return scans, run
        return None


def _run(scans: Scans, kind: ScanKind) -> None:
    try:
        scans.job(kind)()
    except Exception:  # noqa: BLE001  (a bug in one scan kind is logged with its traceback, never silent)
        _log.exception("scan failed", extra={"kind": kind})
