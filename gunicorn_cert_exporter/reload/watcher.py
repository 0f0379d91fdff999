"""One scan of Gunicorn targets: join files, endpoint and master; decide; reload and confirm when allowed."""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace

from gunicorn_cert_exporter.config import GunicornTarget, parse_ip
from gunicorn_cert_exporter.model import (
    AddressDrift,
    EndpointReason,
    EndpointResult,
    FileResult,
    MasterReason,
    MasterState,
    TargetState,
    clamp_to_now,
    down_at,
)
from gunicorn_cert_exporter.reload import drift
from gunicorn_cert_exporter.reload.history import History
from gunicorn_cert_exporter.sources import control_socket, gunicorn
from gunicorn_cert_exporter.sources.endpoints import Prober
from gunicorn_cert_exporter.sources.files import FileScanner, Wanted
from gunicorn_cert_exporter.sources.listeners import Binding

_VERIFY_INTERVAL = 0.2
_BUSY = "another scan is reloading this target"


def _always() -> bool:
    return True


@dataclass
class _Memory:
    """What the watcher remembers of a target between scans.

    ``acting`` is held from the decision through the history record, the reload and its confirmation: a run that
    finds it taken (the previous interval's, or an older config's watcher, which shares this memory) only observes.
    """

    drift: tuple[AddressDrift, ...] = ()
    signals: list[float] = field(default_factory=list)
    signals_total: int = 0
    failures_total: int = 0
    last_reload: float | None = None
    history_problem: str = ""
    master: MasterState | None = None  # the last look, and when: control-socket workers' start times build on it
    master_at: float | None = None
    logged: tuple[str, str] = ("", "")  # the last decision logged: blocked/waiting lines repeat only on change
    acting: threading.Lock = field(default_factory=threading.Lock)
    reloading: TargetState | None = None  # the state a reload being sent and confirmed was decided on


class TargetWatcher:
    """Scan Gunicorn targets and, where every rule allows it, SIGHUP their master and confirm the new leaf."""

    def __init__(
        self,
        *,
        prober: Prober,
        scanner: FileScanner,
        clock: Callable[[], float] = time.time,
        sender: gunicorn.SignalSender = gunicorn.send_signal,
        sleep: Callable[[float], None] = time.sleep,
        logger: logging.Logger | None = None,
        on_observed: Callable[[TargetState], None] | None = None,
        history: History | None = None,
    ) -> None:
        self._on_observed = on_observed or (lambda _state: None)
        self._history = history or History(None)
        self._prober = prober
        self._scanner = scanner
        self._clock = clock
        self._sender = sender
        self._sleep = sleep
        self._log = logger or logging.getLogger("gunicorn_cert_exporter.reload")
        self._memory: dict[str, _Memory] = {}
        self._memory_lock = threading.Lock()  # two runs may overlap: a target must get one memory, one lock
        self._files: dict[str, FileResult] = {}
        self._failures: dict[str, str] = {}  # the last unexpected error per target, logged once
        self._looks: dict[str, Future[TargetState]] = {}  # the last look at each target, maybe past its run's deadline

    def inherit(self, other: TargetWatcher) -> None:
        """Keep what another watcher remembered (drift start, signal history, counters) across a config reload.

        The memories are shared, not copied: a reload the old watcher is still confirming holds the target's lock.
        """
        self._memory = dict(other._memory)

    def scan(
        self,
        targets: Sequence[GunicornTarget],
        *,
        concurrency: int = 8,
        may_act: Callable[[], bool] = _always,
        deadline: float = math.inf,
    ) -> tuple[TargetState, ...]:
        """Scan every target concurrently; a reload being confirmed on one never delays another.

        ``may_act`` tells whether this run may still reload or publish (false once its config is replaced or the
        run is abandoned at its deadline); it is asked again just before each reload is sent. A target whose look
        outlives ``deadline`` (monotonic) is ``scan_deadline`` in this run's results; its look goes on, is published
        when it ends, and a later run waits for it rather than starting a second one.
        """
        with self._memory_lock:
            self._memory = {t.name: self._memory[t.name] for t in targets if t.name in self._memory}
            self._looks = {t.name: self._looks[t.name] for t in targets if t.name in self._looks}
        if not targets:
            return ()
        pool = ThreadPoolExecutor(max_workers=min(concurrency, len(targets)), thread_name_prefix="target")
        try:
            looks = [self._look(pool, target, may_act) for target in targets]
            wait(looks, timeout=None if deadline == math.inf else max(deadline - time.monotonic(), 0.0))
            return tuple(
                look.result() if look.done() else self._late(target, look)
                for target, look in zip(targets, looks, strict=True)
            )
        finally:
            pool.shutdown(wait=False)  # a late look ends in its own thread

    def _look(
        self, pool: ThreadPoolExecutor, target: GunicornTarget, may_act: Callable[[], bool]
    ) -> Future[TargetState]:
        """Start looking at a target, or join the look an earlier run started and has not finished."""
        with self._memory_lock:
            look = self._looks.get(target.name)
            if look is None or look.done():
                look = self._looks[target.name] = pool.submit(self._scan_and_publish, target, may_act)
            return look

    def _late(self, target: GunicornTarget, look: Future[TargetState]) -> TargetState:
        """Mark a target still being looked at; publish its state when the look ends (e.g. the channel's timeout)."""
        look.add_done_callback(lambda done: self._on_observed(done.result()))
        memory = self._memory.get(target.name)
        if memory is not None and memory.reloading is not None:
            return memory.reloading  # looked at, and being reloaded: what the reload was decided on, until confirmed
        reason = "the scan's deadline came before the look at the target ended; it goes on"
        return self._unobserved(target, EndpointReason.SCAN_DEADLINE, MasterReason.SCAN_DEADLINE, reason, "none")

    def _scan_and_publish(self, target: GunicornTarget, may_act: Callable[[], bool]) -> TargetState:
        try:
            state = self.scan_one(target, may_act=may_act)
            self._failures.pop(target.name, None)
        except Exception as exc:  # noqa: BLE001  (a bug on one target must not stop the others' scans)
            state = self._failed(target, exc)
        if may_act():
            self._on_observed(state)  # published when known: a target confirming a reload never holds back another
        return state

    def _failed(self, target: GunicornTarget, exc: Exception) -> TargetState:
        """Turn an unexpected error on one target into its state; log its traceback once.

        The target keeps the series of its last scan: the addresses last probed, down with ``scan_failed`` and no
        drift (unknown, never a false mismatch), the master down with ``scan_failed`` on its channel, under the pid
        last seen. Nothing here is remembered or decided: a failed scan never leads to a reload.
        """
        reason = f"scan failed: {type(exc).__name__}: {str(exc)[:200]}"
        if self._failures.get(target.name) != type(exc).__name__:
            self._log.error("target scan failed", exc_info=exc, extra={"target": target.name, "reason": reason})
        self._failures[target.name] = type(exc).__name__
        return self._unobserved(target, EndpointReason.SCAN_FAILED, MasterReason.SCAN_FAILED, reason, "error")

    def _unobserved(
        self, target: GunicornTarget, down: EndpointReason, blind: MasterReason, reason: str, decision: str
    ) -> TargetState:
        """The state of a target not looked at this time: its last addresses and pid, with ``down`` and ``blind``."""
        memory = self._memory.get(target.name) or _Memory()  # none yet if the history failed: load it next time
        known = tuple(d.address for d in memory.drift)  # one per address the last scan probed
        endpoint = EndpointResult(
            endpoint=target.endpoint,
            server_name=target.sni or "",  # as the prober names it: the same series as a scan that completes
            addresses=down_at(known, down, reason),
            error=down,
            detail=reason,
        )
        last = memory.master or MasterState()
        cert = self._files.get(target.cert_file) or FileResult(path=target.cert_file)
        key = self._files.get(target.key_file) or FileResult(path=target.key_file)
        return TargetState(
            name=target.name,
            cert=cert,
            key=key,
            endpoint=endpoint,
            master=MasterState(
                pid=last.pid,
                start_time=last.start_time,
                error=blind,
                detail=reason,
                channel=_channel(target),
            ),
            drift=tuple(AddressDrift(address=a, mismatch=False) for a in known),
            key_match=drift.key_match(cert, key),
            last_reload=memory.last_reload,
            reload_signals=memory.signals_total,
            reload_failures=memory.failures_total,
            decision=decision,
            decision_reason=reason,
            history_problem=memory.history_problem,
        )

    def _remembered(self, name: str) -> _Memory:
        """Start a target's memory from the reload history on disk (a crash loop must not reset cooldown)."""
        loaded = self._history.load(name, now=self._clock())
        return _Memory(signals=list(loaded.attempts), history_problem=loaded.problem or "")

    def scan_one(self, target: GunicornTarget, *, may_act: Callable[[], bool] = _always) -> TargetState:
        """Observe one target, then act on the decision unless another run is reloading it."""
        with self._memory_lock:
            memory = self._memory.get(target.name)
            if memory is None:
                memory = self._memory[target.name] = self._remembered(target.name)
        state = self._observe(target, memory, self._prober.probe(target.as_endpoint()))
        if not memory.acting.acquire(blocking=False):
            return replace(state, decision=drift.Action.WAIT.value, decision_reason=_BUSY)
        try:
            return self._decide(target, memory, state, may_act)
        finally:
            memory.acting.release()

    def _decide(
        self, target: GunicornTarget, memory: _Memory, state: TargetState, may_act: Callable[[], bool]
    ) -> TargetState:
        decision = drift.decide(rules=target.reload, state=state, signals=memory.signals, now=self._clock())
        state = replace(state, decision=decision.action.value, decision_reason=decision.reason)
        if decision.action is not drift.Action.SIGNAL:
            self._audit_decision(target, memory, state, decision)
            return state
        memory.logged = ("", "")
        if not may_act():
            return replace(state, decision=drift.Action.NONE.value, decision_reason="scan abandoned or config replaced")
        self._on_observed(state)  # the drift is visible while the reload is confirmed, which may take a while
        memory.reloading = state
        try:
            reloaded = self._reload(target, memory, state, may_act)
        finally:
            memory.reloading = None
        return replace(reloaded, decision=state.decision, decision_reason=state.decision_reason)

    def _audit_decision(
        self, target: GunicornTarget, memory: _Memory, state: TargetState, decision: drift.Decision
    ) -> None:
        """Log a decision at info when its rule changes; the same rule again is a debug line, not a flood."""
        key = (decision.action.value, decision.rule)
        quiet = decision.action is drift.Action.NONE or key == memory.logged
        memory.logged = key
        log = self._log.debug if quiet else self._log.info
        log("reload decision", extra=_audit(target, state, decision.action.value, decision.reason))

    def _observe(self, target: GunicornTarget, memory: _Memory, endpoint: EndpointResult) -> TargetState:
        now = self._clock()
        cert = self._scanner.scan_one(Wanted(target.cert_file), self._files.get(target.cert_file))
        key = self._scanner.scan_one(Wanted(target.key_file), self._files.get(target.key_file))
        self._files[target.cert_file], self._files[target.key_file] = cert, key
        master = self._master(target, memory, now)
        if master.up and master.workers_since is not None:
            # Never backwards: process start times carry the boot time's one-second rounding.
            memory.last_reload = max(master.workers_since, memory.last_reload or 0.0)
        previous = memory.master
        if master.reloads is not None and previous is not None and previous.reloads not in (None, master.reloads):
            # The master reloaded (whoever asked): it happened after the previous look.
            memory.last_reload = max(memory.master_at or now, memory.last_reload or 0.0)
        memory.master, memory.master_at = master, now
        # Never later than now, whatever a master said (uptime -1e300) or a config reload carried over.
        memory.last_reload = clamp_to_now(memory.last_reload, now=now)
        leaf = cert.certs[0] if cert.certs else None
        drifts = drift.compare(endpoint=endpoint, file_leaf=leaf, previous=memory.drift, now=now)
        memory.drift = drifts
        return TargetState(
            name=target.name,
            cert=cert,
            key=key,
            endpoint=endpoint,
            master=master,
            drift=drifts,
            key_match=drift.key_match(cert, key),
            last_reload=memory.last_reload,
            reload_signals=memory.signals_total,
            reload_failures=memory.failures_total,
            history_problem=memory.history_problem,
        )

    def _master(self, target: GunicornTarget, memory: _Memory, now: float) -> MasterState:
        """Prove the master through its control socket when one is configured, else through the pidfile or pid."""
        host, port = target.binding()
        binding = Binding(port=port, host=parse_ip(host) if host else None)
        if target.control_socket is None:
            state = gunicorn.locate(pidfile=target.pidfile, pid=target.pid, binding=binding)
            return replace(state, channel=_channel(target))
        try:
            view = control_socket.observe(target.control_socket, timeout=target.timeout)
        except control_socket.ControlError as exc:
            return MasterState(error=exc.reason, detail=exc.detail, channel=_channel(target))
        state = control_socket.master_state(
            view=view, port=port, previous=memory.master, previous_at=memory.master_at, now=now
        )
        if state.up and (target.pidfile or target.pid):
            # Cross-check where the pid is visible (same PID namespace); elsewhere the pidfile's pid means nothing.
            local = gunicorn.locate(pidfile=target.pidfile, pid=target.pid)
            if local.up and local.pid != view.pid:
                detail = f"the control socket's master is {view.pid}, the pidfile names {local.pid}"
                return replace(state, error=MasterReason.PID_MISMATCH, detail=detail)
        return state

    def _reload(
        self, target: GunicornTarget, memory: _Memory, state: TargetState, may_act: Callable[[], bool]
    ) -> TargetState:
        master = state.master
        if master.pid is None or master.start_time is None:  # decide() proved the master; keep mypy sure
            return state
        identity = gunicorn.MasterIdentity(master.pid, master.start_time)
        sent_at = self._clock()
        # Every attempt counts toward cooldown and max_per_hour, failed ones too: nothing may retry in a loop.
        window = max(drift.HOUR, target.reload.cooldown)
        memory.signals = [t for t in memory.signals if sent_at - t < window] + [sent_at]
        # Written before the signal: an exporter killed right after sending still remembers it at its next start.
        problem = self._history.record(target.name, tuple(memory.signals))
        if problem is not None:
            memory.history_problem = problem
            self._log.warning("reload refused", extra=_audit(target, state, "history_unwritable", problem))
            return replace(state, history_problem=problem)
        memory.history_problem = ""
        try:
            self._send(target, identity, may_act)
        except _AbandonedError:
            self._log.warning("reload withdrawn", extra=_audit(target, state, "withdrawn", "scan abandoned"))
            return state
        except (ProcessLookupError, PermissionError, OSError) as exc:
            memory.failures_total += 1
            self._log.warning("reload failed", extra=_audit(target, state, "signal_failed", type(exc).__name__))
            return replace(state, reload_failures=memory.failures_total)
        memory.signals_total += 1
        endpoint, confirmed = self._confirm(target, state, identity)
        outcome = "confirmed" if confirmed else "not_confirmed"
        if not confirmed:
            memory.failures_total += 1
        new_state = self._observe(target, memory, endpoint)
        if outcome == "confirmed":
            memory.last_reload = max(memory.last_reload or 0.0, sent_at)
            new_state = replace(new_state, last_reload=memory.last_reload)
        took = f"{self._clock() - sent_at:.2f}s"
        log = self._log.info if outcome == "confirmed" else self._log.warning
        how = "reload sent through the control socket to" if target.control_socket else "SIGHUP sent to"
        log("reload", extra=_audit(target, new_state, outcome, f"{how} {identity.pid}, {took}"))
        return new_state

    def _send(self, target: GunicornTarget, identity: gunicorn.MasterIdentity, may_act: Callable[[], bool]) -> None:
        """SIGHUP the proven master, or ask it to reload through its control socket if it is still the same one."""
        if target.control_socket is None:
            if not may_act():
                raise _AbandonedError
            self._sender(identity, signal.SIGHUP)
            return
        view = control_socket.observe(target.control_socket, timeout=target.timeout)
        if not self._same_master(view, identity):
            raise ProcessLookupError(identity.pid)  # another master answers there now, maybe with the same pid
        if not may_act():
            raise _AbandonedError
        control_socket.reload(target.control_socket, timeout=target.timeout, pid=identity.pid)

    def _workers_now(self, target: GunicornTarget, identity: gunicorn.MasterIdentity) -> set[int] | None:
        """Return the pids of the master's live workers, or None if it can't be seen as the same master."""
        if target.control_socket is None:
            master = gunicorn.inspect(identity.pid)
            return {w.pid for w in master.workers} if master.up else None
        try:
            view = control_socket.observe(target.control_socket, timeout=target.timeout)
        except control_socket.ControlError:
            return None  # e.g. re-created around the fork: look again
        return set(view.workers) if self._same_master(view, identity) else None

    def _same_master(self, view: control_socket.ControlView, identity: gunicorn.MasterIdentity) -> bool:
        return control_socket.same_master(view, pid=identity.pid, start_time=identity.start_time, now=self._clock())

    def _confirm(
        self, target: GunicornTarget, state: TargetState, identity: gunicorn.MasterIdentity
    ) -> tuple[EndpointResult, bool]:
        """Re-probe until only the new leaf is served: every pre-HUP worker gone, every address on the new leaf."""
        # Old workers keep accepting for a moment after HUP; one probe that sees the new leaf proves nothing.
        old_workers = {w.pid for w in state.master.workers}
        wanted = state.file_leaf.fingerprint_sha256 if state.file_leaf else ""
        deadline = self._clock() + target.reload.verify_timeout
        endpoint = state.endpoint
        while True:
            self._sleep(_VERIFY_INTERVAL)
            workers = self._workers_now(target, identity)
            replaced = bool(workers) and not old_workers & (workers or set())
            if replaced:  # probe only once no old worker can answer
                endpoint = self._prober.probe(target.as_endpoint())
                served = [a.leaf.fingerprint_sha256 for a in endpoint.addresses if a.leaf is not None]
                if served and all(fp == wanted for fp in served):
                    return endpoint, True
            if self._clock() >= deadline:
                return endpoint, False


def _channel(target: GunicornTarget) -> str:
    """Return what proves and reloads the target's master: its control socket if set, else its pidfile or pid."""
    if target.control_socket is not None:
        return "control_socket"
    return "pidfile" if target.pidfile else "pid"


class _AbandonedError(Exception):
    """The run lost the right to act (config replaced, deadline passed) between its decision and the send."""


def _audit(target: GunicornTarget, state: TargetState, outcome: str, reason: str) -> dict[str, object]:
    leaf = state.file_leaf
    served = sorted({a.leaf.fingerprint_sha256[:16] for a in state.endpoint.addresses if a.leaf is not None})
    return {
        "target": target.name,
        "outcome": outcome,
        "reason": reason,
        "pid": state.master.pid,
        "file_leaf": leaf.fingerprint_sha256[:16] if leaf else "",
        "served_leaf": ",".join(served),
        "dry_run": target.reload.dry_run,
    }
