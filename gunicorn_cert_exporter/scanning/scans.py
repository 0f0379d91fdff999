"""The scans of one config: files, endpoints and Gunicorn targets, each publishing its part of the snapshot."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from gunicorn_cert_exporter.config import Config, EndpointConfig, FileSource
from gunicorn_cert_exporter.model import (
    EndpointReason,
    EndpointResult,
    FileReason,
    FileResult,
    MasterReason,
    PatternResult,
    ScanStats,
    TargetState,
)
from gunicorn_cert_exporter.reload.history import History
from gunicorn_cert_exporter.reload.watcher import TargetWatcher
from gunicorn_cert_exporter.scanning.store import Store
from gunicorn_cert_exporter.sources import files, globs, gunicorn
from gunicorn_cert_exporter.sources.endpoints import Prober
from gunicorn_cert_exporter.sources.files import FileScanner, Wanted

KINDS = ("files", "endpoints", "gunicorn")


class EndpointProber(Protocol):
    """What probes the configured endpoints: a Prober in this process, or sources/probe_process.ProbeProcess."""

    def probe_all(
        self, configs: Sequence[EndpointConfig], *, concurrency: int, deadline: float
    ) -> tuple[EndpointResult, ...]:
        """Probe every endpoint on every address; by ``deadline`` (monotonic), mark those not probed yet."""

    def abandon(self) -> None:
        """Let the scan in progress publish what it has now (the scheduler's watchdog, past its deadline)."""


@dataclass
class _FilesRun:
    """A files scan in flight: enough to publish what it has if it gets stuck in one read."""

    token: int
    started: float
    wanted: list[Wanted]
    patterns: list[PatternResult]
    progress: list[FileResult]


class Scans:
    """The three scans of a config; each publishes a whole part of the snapshot when it ends.

    Each scan has a deadline (``scan.deadline``, 80% of the interval): the files scan checks it between files and
    marks what it did not reach; the endpoints scan (in the probe process) and the targets scan publish at the
    deadline what has answered and mark the rest ``scan_deadline``, whose probes go on. A scan stuck in one read past
    its deadline is abandoned by the scheduler through ``overrun()``: what it has is published, and whatever it
    publishes later is dropped (a newer run owns the kind); an endpoints scan is only told to publish now.
    A target about to be reloaded is published ahead of its scan, so its drift shows during the reload. A targets
    run reloads and publishes a target only while it owns the kind (not retired, not abandoned, before its deadline).
    """

    def __init__(
        self,
        *,
        config: Config,
        store: Store,
        prober: Prober,
        endpoint_prober: EndpointProber | None = None,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
        sender: gunicorn.SignalSender = gunicorn.send_signal,
        history: History | None = None,
    ) -> None:
        self.config = config
        self._retired = False
        self._store = store
        self._prober = prober
        self._endpoint_prober = endpoint_prober  # the endpoints scan's (a ProbeProcess when serving)
        self._clock = clock
        self._log = logger or logging.getLogger("gunicorn_cert_exporter.scan")
        self._lock = threading.Lock()
        self._tokens = itertools.count(1)
        self._current: dict[str, int] = {}  # the run of each kind allowed to publish
        self._owner: dict[str, int] = {}  # the thread of that run
        self._files_run: _FilesRun | None = None
        self._scanner, self._finder = self._file_tools()
        for source, timeout in slow_timeouts(config):
            self._log.warning(
                "timeout longer than the scan deadline: the source shows scan_deadline at each scan it outlives",
                extra={"source": source, "timeout_seconds": timeout, "deadline_seconds": config.scan.deadline},
            )
        # The endpoints whose last addresses the prober keeps while their name fails to resolve: this config's.
        prober.track([*config.endpoints, *(target.as_endpoint() for target in config.gunicorn)])
        self.watcher = TargetWatcher(
            prober=prober,
            scanner=FileScanner(clock=clock, max_size=config.scan.max_file_size),
            clock=clock,
            sender=sender,
            on_observed=self._observed,
            history=history,
        )

    def _file_tools(self) -> tuple[FileScanner, globs.Finder]:
        scan = self.config.scan
        return (
            FileScanner(clock=self._clock, max_size=scan.max_file_size),
            globs.Finder(max_files=scan.max_files, max_depth=scan.max_depth),
        )

    def scan_files(self) -> None:
        """Scan every configured file, plus each target's cert_file and key_file, by the deadline."""
        token, started = self._begin("files"), time.monotonic()
        deadline = started + self.config.scan.deadline
        sources = list(self.config.files)
        for target in self.config.gunicorn:
            sources.append(FileSource(paths=[target.cert_file, target.key_file]))
        scanner, finder = self._scanner, self._finder
        # The walk may take half the time: the files it found must still be read.
        wanted, patterns = finder.expand(sources, deadline=started + self.config.scan.deadline / 2)
        run = _FilesRun(token, started, wanted, patterns, [])
        with self._lock:
            self._files_run = run
        results = scanner.scan(wanted, deadline=deadline, progress=run.progress)
        self._publish("files", token, started, files=results, patterns=tuple(patterns))

    def scan_endpoints(self) -> None:
        """Probe every configured endpoint on every address; publish at the deadline what has answered by then."""
        token, started = self._begin("endpoints"), time.monotonic()
        configs, concurrency = self.config.endpoints, self.config.scan.concurrency
        if self._endpoint_prober is None:  # in this process (`check`): every probe ends within its timeout
            results = self._prober.probe_all(configs, concurrency=concurrency)
        else:
            deadline = started + self.config.scan.deadline
            results = self._endpoint_prober.probe_all(configs, concurrency=concurrency, deadline=deadline)
        self._publish("endpoints", token, started, endpoints=results)

    def scan_targets(self) -> None:
        """Watch every Gunicorn target: drift, key pairing, master, and reload when allowed."""
        token, started = self._begin("gunicorn"), time.monotonic()
        deadline = started + self.config.scan.deadline

        def may_act() -> bool:
            # Asked just before each reload: a replaced config, a newer run or a passed deadline sends nothing.
            return self._owns("gunicorn", token) and time.monotonic() < deadline

        targets, concurrency = self.config.gunicorn, self.config.scan.concurrency
        results = self.watcher.scan(targets, concurrency=concurrency, may_act=may_act, deadline=deadline)
        self._publish("gunicorn", token, started, targets=results)

    def job(self, kind: str) -> Callable[[], None]:
        """Return the scan of one kind."""
        return {"files": self.scan_files, "endpoints": self.scan_endpoints, "gunicorn": self.scan_targets}[kind]

    def run_all(self) -> None:
        """Run each scan once, in order (used by `check` and at start-up)."""
        for kind in KINDS:
            self.job(kind)()

    def overrun(self, kind: str, thread: int | None = None) -> None:
        """Give up on a scan stuck past its deadline: publish what it has, mark the rest, drop what it sends later.

        ``thread`` names the run (its thread ident): if a newer run of the kind has begun since, it owns the kind
        and nothing is done (with jitter, the next run may start before this run's watchdog fires).
        """
        if kind == "endpoints" and self._endpoint_prober is not None:
            self._endpoint_prober.abandon()  # the run publishes at once what it has; its probes go on in the child
            return
        with self._lock:
            if thread is not None and self._owner.get(kind) != thread:
                return
            self._current[kind] = next(self._tokens)  # the stuck run no longer owns the kind
            run = None
            if kind == "files":
                run, self._files_run = self._files_run, None
                # The stuck thread keeps its scanner and finder; the next run gets a fresh finder and a scanner
                # that starts from what this run knew and found (a cold start could overrun again, and forever).
                self._scanner, self._finder = self._scanner.successor(), self._file_tools()[1]
        self._log.warning("scan overran its deadline; abandoned", extra={"kind": kind})
        if run is None or self._retired:
            return
        known = {f.path: f for f in self._store.snapshot.files}
        done = list(run.progress)
        left = [files.overdue(w.path, known.get(w.path)) for w in run.wanted[len(done) :]]
        parts = {"files": (*done, *left), "patterns": tuple(run.patterns)}
        stats = ScanStats(time.monotonic() - run.started, self._clock(), coverage(parts))
        self._store.record_scan("files", stats, **parts)

    def _observed(self, state: TargetState) -> None:
        if not self._retired:
            self._store.update_target(state)

    def retire(self) -> None:
        """Stop publishing and reloading: a scan of a replaced config that ends late must not act on old rules."""
        with self._lock:
            self._retired = True

    def _owns(self, kind: str, token: int) -> bool:
        with self._lock:
            return not self._retired and self._current.get(kind) == token

    def _begin(self, kind: str) -> int:
        with self._lock:
            token = self._current[kind] = next(self._tokens)
            self._owner[kind] = threading.get_ident()
        return token

    def _publish(self, kind: str, token: int, started: float, **parts: object) -> None:
        with self._lock:
            if self._retired or self._current.get(kind) != token:
                return  # a replaced config, or a run abandoned at its deadline
            if kind == "files":
                self._files_run = None
            self._owner.pop(kind, None)  # finished: a watchdog firing while the thread exits abandons nothing
            took = time.monotonic() - started
            stats = ScanStats(duration_seconds=took, finished_at=self._clock(), coverage=coverage(parts))
            self._store.record_scan(kind, stats, **parts)
        self._log.debug("scan finished", extra={"kind": kind, "duration_seconds": round(took, 4)})


_NOT_LOOKED_AT = frozenset({EndpointReason.SCAN_DEADLINE, EndpointReason.SCAN_FAILED})
_MASTER_NOT_LOOKED_AT = frozenset({MasterReason.SCAN_DEADLINE, MasterReason.SCAN_FAILED})


def _fresh_endpoint(result: EndpointResult) -> bool:
    return result.error not in _NOT_LOOKED_AT and all(a.error not in _NOT_LOOKED_AT for a in result.addresses)


def coverage(parts: Mapping[str, object]) -> float:
    """Return the share of the sources in a scan's parts with a result of this scan (1.0 when there are none)."""
    fresh: list[bool] = []
    for item in itertools.chain.from_iterable(part for part in parts.values() if isinstance(part, tuple)):
        if isinstance(item, FileResult):
            fresh.append(item.error is not FileReason.SCAN_DEADLINE)
        elif isinstance(item, EndpointResult):
            fresh.append(_fresh_endpoint(item))
        elif isinstance(item, TargetState):
            fresh.append(item.master.error not in _MASTER_NOT_LOOKED_AT and _fresh_endpoint(item.endpoint))
    return sum(fresh) / len(fresh) if fresh else 1.0


def slow_timeouts(config: Config) -> list[tuple[str, float]]:
    """Return each endpoint and target whose ``timeout`` is longer than the scan deadline, with that timeout."""
    deadline = config.scan.deadline
    endpoints = [(f"endpoint {e.address}", e.timeout) for e in config.endpoints if e.timeout > deadline]
    return endpoints + [(f"gunicorn {t.name}", t.timeout) for t in config.gunicorn if t.timeout > deadline]
