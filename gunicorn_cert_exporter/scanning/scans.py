"""The scans of one config: files, endpoints and Gunicorn targets, each publishing its part of the snapshot."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from gunicorn_cert_exporter import revocation
from gunicorn_cert_exporter.config import Config, EndpointConfig, FileSource, GunicornTarget
from gunicorn_cert_exporter.model import (
    DiscoveryReport,
    EndpointResult,
    FileResult,
    PatternResult,
    ScanStats,
    TargetSource,
    TargetState,
)
from gunicorn_cert_exporter.scanning.coverage import coverage, slow_timeouts
from gunicorn_cert_exporter.scanning.renewals import lineage_sources
from gunicorn_cert_exporter.scanning.store import Store
from gunicorn_cert_exporter.sources import discovery, files, globs, gunicorn
from gunicorn_cert_exporter.sources.endpoints import Prober
from gunicorn_cert_exporter.sources.files import FileScanner, Wanted
from gunicorn_cert_exporter.targets.discover import Discovery
from gunicorn_cert_exporter.targets.history import History
from gunicorn_cert_exporter.targets.watcher import TargetWatcher
from gunicorn_cert_exporter.vocabulary import SCANNED, ScanKind


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
        find_masters: Callable[[], Sequence[discovery.FoundMaster]] = discovery.find_masters,
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
        self._current: dict[ScanKind, int] = {}  # the run of each kind allowed to publish
        self._owner: dict[ScanKind, int] = {}  # the thread of that run
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
            revoked=lambda: revocation.revoked_fingerprints(store.snapshot),
        )
        self.discovery = Discovery(forget_after=config.discovery.forget_after, reload=config.discovery.reload)
        self._find_masters = find_masters
        self._discovery_lock = threading.Lock()  # two targets runs may overlap: one pass at a time
        self._discovered: tuple[GunicornTarget, ...] = ()  # the last pass's targets: their files are scanned too
        self._origins: dict[str, tuple[TargetSource, str]] = {}  # target name -> (source, worker class)

    def _file_tools(self) -> tuple[FileScanner, globs.Finder]:
        scan = self.config.scan
        return (
            FileScanner(clock=self._clock, max_size=scan.max_file_size),
            globs.Finder(max_files=scan.max_files, max_depth=scan.max_depth),
        )

    def scan_files(self) -> None:
        """Scan every configured file, plus each target's cert_file and key_file, by the deadline."""
        token, started = self._begin(ScanKind.FILES), time.monotonic()
        deadline = started + self.config.scan.deadline
        sources = list(self.config.files)
        for target in (*self.config.gunicorn, *self._discovered):
            sources.append(FileSource(paths=[target.cert_file, target.key_file]))
        sources += lineage_sources(self.config)  # certbot's lineages, when ARI asks about them
        scanner, finder = self._scanner, self._finder
        # The walk may take half the time: the files it found must still be read.
        wanted, patterns = finder.expand(sources, deadline=started + self.config.scan.deadline / 2)
        run = _FilesRun(token, started, wanted, patterns, [])
        with self._lock:
            self._files_run = run
        results = scanner.scan(wanted, deadline=deadline, progress=run.progress)
        self._publish(
            ScanKind.FILES,
            token,
            started,
            lambda stats: self._store.record_files(stats, files=results, patterns=tuple(patterns)),
            covered=coverage(results),
        )

    def scan_endpoints(self) -> None:
        """Probe every configured endpoint on every address; publish at the deadline what has answered by then."""
        token, started = self._begin(ScanKind.ENDPOINTS), time.monotonic()
        configs, concurrency = self.config.endpoints, self.config.scan.concurrency
        if self._endpoint_prober is None:  # in this process (`check`): every probe ends within its timeout
            results = self._prober.probe_all(configs, concurrency=concurrency)
        else:
            deadline = started + self.config.scan.deadline
            results = self._endpoint_prober.probe_all(configs, concurrency=concurrency, deadline=deadline)
        self._publish(
            ScanKind.ENDPOINTS,
            token,
            started,
            lambda stats: self._store.record_endpoints(stats, endpoints=results),
            covered=coverage(results),
        )

    def scan_targets(self) -> None:
        """Watch every Gunicorn target: drift, key pairing, master, and reload when allowed."""
        token, started = self._begin(ScanKind.GUNICORN), time.monotonic()
        deadline = started + self.config.scan.deadline

        def may_act() -> bool:
            # Asked just before each reload: a replaced config, a newer run or a passed deadline sends nothing.
            return self._owns(ScanKind.GUNICORN, token) and time.monotonic() < deadline

        targets, report = self._discover()
        concurrency = self.config.scan.concurrency
        scanned = self.watcher.scan(targets, concurrency=concurrency, may_act=may_act, deadline=deadline)
        results = tuple(self._stamped(state) for state in scanned)
        self._publish(
            ScanKind.GUNICORN,
            token,
            started,
            lambda stats: self._store.record_targets(stats, targets=results, discovery=report),
            covered=coverage(results),
        )

    def _discover(self) -> tuple[list[GunicornTarget], DiscoveryReport]:
        """Return the configured targets and, when discovery is on, the masters found on this host."""
        configured = list(self.config.gunicorn)
        if not self.config.discovery.gunicorn:
            return configured, DiscoveryReport()
        with self._discovery_lock:
            found = self._find_masters()
            result = self.discovery.update(
                found, configured=configured, now=self._clock(), server_name=discovery.first_dns_name
            )
        classes = dict(result.worker_classes)
        origins: dict[str, tuple[TargetSource, str]] = {
            t.name: ("discovery", classes.get(t.name, "")) for t in result.targets
        }
        self._origins, self._discovered = origins, result.targets
        report = DiscoveryReport(enabled=True, masters=result.masters, errors=result.errors)
        return [*configured, *result.targets], report

    def _stamped(self, state: TargetState) -> TargetState:
        """Mark a target's state with where the target comes from (the config unless discovery found it)."""
        origin = self._origins.get(state.name)
        return state if origin is None else replace(state, source=origin[0], worker_class=origin[1])

    def job(self, kind: ScanKind) -> Callable[[], None]:
        """Return the scan of one kind."""
        jobs = {
            ScanKind.FILES: self.scan_files,
            ScanKind.ENDPOINTS: self.scan_endpoints,
            ScanKind.GUNICORN: self.scan_targets,
        }
        return jobs[kind]  # a kind in SCANNED: the exporter's own part is never scanned

    def run_all(self) -> None:
        """Run each scan once, in order (used by `check` and at start-up)."""
        if self.config.discovery.gunicorn:
            self._discover()  # so that this files scan reads the discovered targets' files too
        for kind in SCANNED:
            self.job(kind)()

    def overrun(self, kind: ScanKind, thread: int | None = None) -> None:
        """Give up on a scan stuck past its deadline: publish what it has, mark the rest, drop what it sends later.

        ``thread`` names the run (its thread ident): if a newer run of the kind has begun since, it owns the kind
        and nothing is done (with jitter, the next run may start before this run's watchdog fires).
        """
        with self._lock:
            if thread is not None and self._owner.get(kind) != thread:
                return
            if kind is ScanKind.ENDPOINTS and self._endpoint_prober is not None:
                # The run publishes at once what it has (it keeps the kind); its probes go on in the child.
                self._endpoint_prober.abandon()
                return
            self._current[kind] = next(self._tokens)  # the stuck run no longer owns the kind
            run = None
            if kind is ScanKind.FILES:
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
        stats = ScanStats(time.monotonic() - run.started, self._clock(), coverage([*done, *left]))
        self._store.record_files(stats, files=(*done, *left), patterns=tuple(run.patterns))

    def _observed(self, state: TargetState) -> None:
        if not self._retired:
            self._store.update_target(self._stamped(state))

    def retire(self) -> None:
        """Stop publishing and reloading: a scan of a replaced config that ends late must not act on old rules."""
        with self._lock:
            self._retired = True

    def _owns(self, kind: ScanKind, token: int) -> bool:
        with self._lock:
            return not self._retired and self._current.get(kind) == token

    def _begin(self, kind: ScanKind) -> int:
        with self._lock:
            token = self._current[kind] = next(self._tokens)
            self._owner[kind] = threading.get_ident()
        return token

    def _publish(
        self, kind: ScanKind, token: int, started: float, record: Callable[[ScanStats], None], *, covered: float
    ) -> None:
        """Hand the run's results to ``record`` (a Store method) with its timing, if the run still owns its kind.

        ``covered``: the share of the run's sources with a result of this run (``scanning.coverage``).
        """
        with self._lock:
            if self._retired or self._current.get(kind) != token:
                return  # a replaced config, or a run abandoned at its deadline
            if kind is ScanKind.FILES:
                self._files_run = None
            self._owner.pop(kind, None)  # finished: a watchdog firing while the thread exits abandons nothing
            took = time.monotonic() - started
            record(ScanStats(duration_seconds=took, finished_at=self._clock(), coverage=covered))
        self._log.debug("scan finished", extra={"kind": kind, "duration_seconds": round(took, 4)})
