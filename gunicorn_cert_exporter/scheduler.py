"""APScheduler jobs that run scans and publish their results to the store."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from gunicorn_cert_exporter import files, gunicorn
from gunicorn_cert_exporter.config import Config, FileSource
from gunicorn_cert_exporter.endpoints import Prober
from gunicorn_cert_exporter.files import FileScanner
from gunicorn_cert_exporter.model import ScanStats, TargetState
from gunicorn_cert_exporter.store import Store
from gunicorn_cert_exporter.watch import TargetWatcher

KINDS = ("files", "endpoints", "gunicorn")


class Scans:
    """The three scans of a config; each publishes a whole part of the snapshot when it ends.

    The one exception: a target about to be reloaded is published first, so its drift shows during the reload.
    """

    def __init__(
        self,
        *,
        config: Config,
        store: Store,
        prober: Prober,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
        sender: gunicorn.SignalSender = gunicorn.send_signal,
    ) -> None:
        self.config = config
        self._retired = False
        self._store = store
        self._prober = prober
        self._clock = clock
        self._log = logger or logging.getLogger("gunicorn_cert_exporter.scan")
        self._scanner = FileScanner(clock=clock, max_size=config.scan.max_file_size)
        self._finder = files.Finder()
        self.watcher = TargetWatcher(
            prober=prober,
            scanner=FileScanner(clock=clock, max_size=config.scan.max_file_size),
            clock=clock,
            sender=sender,
            on_observed=self._observed,
        )

    def scan_files(self) -> None:
        """Scan every configured file, plus each target's cert_file and key_file."""
        started = time.monotonic()
        sources = list(self.config.files)
        for target in self.config.gunicorn:
            sources.append(FileSource(paths=[target.cert_file, target.key_file]))
        wanted, patterns = self._finder.expand(sources)
        results = self._scanner.scan(wanted)
        self._publish("files", started, files=results, patterns=tuple(patterns))

    def scan_endpoints(self) -> None:
        """Probe every configured endpoint on every address."""
        started = time.monotonic()
        results = self._prober.probe_all(self.config.endpoints, concurrency=self.config.scan.concurrency)
        self._publish("endpoints", started, endpoints=results)

    def scan_targets(self) -> None:
        """Watch every Gunicorn target: drift, key pairing, master, and reload when allowed."""
        started = time.monotonic()
        results = self.watcher.scan(self.config.gunicorn, concurrency=self.config.scan.concurrency)
        self._publish("gunicorn", started, targets=results)

    def run_all(self) -> None:
        """Run each scan once, in order (used by `check` and at start-up)."""
        for job in (self.scan_files, self.scan_endpoints, self.scan_targets):
            job()

    def _observed(self, state: TargetState) -> None:
        if not self._retired:
            self._store.update_target(state)

    def retire(self) -> None:
        """Stop publishing: a scan of a replaced config that ends late must not bring back its sources."""
        self._retired = True

    def _publish(self, kind: str, started: float, **parts: object) -> None:
        if self._retired:
            return
        took = time.monotonic() - started
        self._store.record_scan(kind, ScanStats(duration_seconds=took, finished_at=self._clock()), **parts)
        self._log.debug("scan finished", extra={"kind": kind, "duration_seconds": round(took, 4)})


class Scheduler:
    """Run the scans of the current config in the background; swap them when the config changes."""

    def __init__(self, scans: Scans) -> None:
        self._scheduler = BackgroundScheduler(
            timezone=timezone.utc, job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
        )
        self._scans = scans

    @property
    def scans(self) -> Scans:
        """Return the scans now scheduled."""
        return self._scans

    def start(self) -> None:
        """Schedule every scan, the first run now."""
        self._schedule(self._scans)
        self._scheduler.start()

    def replace(self, scans: Scans) -> None:
        """Swap the scheduled scans for those of a new config; the new ones run at once."""
        old, self._scans = self._scans, scans
        old.retire()
        self._schedule(scans)

    def shutdown(self) -> None:
        """Stop scheduling; running scans finish in the background."""
        self._scheduler.shutdown(wait=False)

    def _schedule(self, scans: Scans) -> None:
        interval = scans.config.scan.interval
        jitter = int(interval * scans.config.scan.jitter) or None
        now = datetime.now(timezone.utc)
        for kind, job in zip(KINDS, (scans.scan_files, scans.scan_endpoints, scans.scan_targets), strict=True):
            self._scheduler.add_job(
                job,
                IntervalTrigger(seconds=interval, jitter=jitter),
                id=kind,
                name=f"scan {kind}",
                replace_existing=True,
                next_run_time=now,
            )
