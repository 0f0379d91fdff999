"""The scans of one config: files, endpoints and Gunicorn targets, each publishing its part of the snapshot."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from gunicorn_cert_exporter.config import Config, FileSource
from gunicorn_cert_exporter.model import ScanStats, TargetState
from gunicorn_cert_exporter.reload.history import History
from gunicorn_cert_exporter.reload.watcher import TargetWatcher
from gunicorn_cert_exporter.scanning.store import Store
from gunicorn_cert_exporter.sources import files, gunicorn
from gunicorn_cert_exporter.sources.endpoints import Prober
from gunicorn_cert_exporter.sources.files import FileScanner

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
        history: History | None = None,
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
            history=history,
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
