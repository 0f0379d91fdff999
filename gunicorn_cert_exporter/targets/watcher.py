"""One scan of Gunicorn targets: observe each, decide (pure), and reload and confirm where every rule allows."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import replace

from gunicorn_cert_exporter import revocation
from gunicorn_cert_exporter.config import GunicornTarget
from gunicorn_cert_exporter.model import TargetState
from gunicorn_cert_exporter.reasons import EndpointReason, MasterReason
from gunicorn_cert_exporter.sources import gunicorn
from gunicorn_cert_exporter.sources.endpoints import Prober
from gunicorn_cert_exporter.sources.files import FileScanner
from gunicorn_cert_exporter.targets import policy
from gunicorn_cert_exporter.targets.act import Actor, audit
from gunicorn_cert_exporter.targets.channel import MasterChannel, channel_for
from gunicorn_cert_exporter.targets.history import History
from gunicorn_cert_exporter.targets.memory import Memory
from gunicorn_cert_exporter.targets.observe import Observer
from gunicorn_cert_exporter.vocabulary import Action

_BUSY = "another scan is reloading this target"


def _always() -> bool:
    return True


class TargetWatcher:
    """Scan Gunicorn targets and, where every rule allows it, reload their master and confirm the new leaf."""

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
        revoked: Callable[[], frozenset[str]] = frozenset,
    ) -> None:
        self._revoked = revoked  # fingerprints a verified CRL/OCSP answer says are revoked
        self._on_observed = on_observed or (lambda _state: None)
        self._history = history or History(None)
        self._prober = prober
        self._clock = clock
        self._sender = sender
        self._log = logger or logging.getLogger("gunicorn_cert_exporter.reload")
        self._observer = Observer(scanner=scanner, clock=clock)
        self._actor = Actor(
            prober=prober, observer=self._observer, history=self._history, clock=clock, sleep=sleep, logger=self._log
        )
        self._memory: dict[str, Memory] = {}
        self._memory_lock = threading.Lock()  # two runs may overlap: a target must get one memory, one lock
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
        memory = self._memory.get(target.name) or Memory()
        if memory.reloading is not None:
            return memory.reloading  # looked at, and being reloaded: what the reload was decided on, until confirmed
        reason = "the scan's deadline came before the look at the target ended; it goes on"
        return self._observer.unobserved(
            target,
            memory,
            self._channel(target),
            down=EndpointReason.SCAN_DEADLINE,
            blind=MasterReason.SCAN_DEADLINE,
            reason=reason,
            decision=Action.NONE,
        )

    def _channel(self, target: GunicornTarget) -> MasterChannel:
        return channel_for(target, sender=self._sender, clock=self._clock)

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
        """Turn an unexpected error on one target into its state (its last series, down); log its traceback once."""
        memory = self._memory.get(target.name) or Memory()  # none yet if the history failed: load it next time
        reason = f"scan failed: {type(exc).__name__}: {str(exc)[:200]}"
        if self._failures.get(target.name) != type(exc).__name__:
            self._log.error("target scan failed", exc_info=exc, extra={"target": target.name, "reason": reason})
        self._failures[target.name] = type(exc).__name__
        return self._observer.unobserved(
            target,
            memory,
            self._channel(target),
            down=EndpointReason.SCAN_FAILED,
            blind=MasterReason.SCAN_FAILED,
            reason=reason,
            decision=Action.ERROR,
        )

    def _remembered(self, name: str) -> Memory:
        """Start a target's memory from the reload history on disk (a crash loop must not reset cooldown)."""
        loaded = self._history.load(name, now=self._clock())
        return Memory(
            signals=list(loaded.attempts), history_problem=loaded.problem or "", previous_leaves=list(loaded.previous)
        )

    def scan_one(self, target: GunicornTarget, *, may_act: Callable[[], bool] = _always) -> TargetState:
        """Observe one target, then act on the decision unless another run is reloading it."""
        with self._memory_lock:
            memory = self._memory.get(target.name)
            if memory is None:
                memory = self._memory[target.name] = self._remembered(target.name)
        channel = self._channel(target)
        state = self._observer.observe(target, memory, self._prober.probe(target.as_endpoint()), channel)
        if not memory.acting.acquire(blocking=False):
            return replace(state, decision=Action.WAIT, decision_reason=_BUSY)
        try:
            return self._decide(target, memory, state, channel, may_act)
        finally:
            memory.acting.release()

    def _decide(
        self,
        target: GunicornTarget,
        memory: Memory,
        state: TargetState,
        channel: MasterChannel,
        may_act: Callable[[], bool],
    ) -> TargetState:
        decision = policy.decide(
            rules=target.reload,
            state=state,
            signals=memory.signals,
            now=self._clock(),
            served_revoked=revocation.served_leaf_revoked(state, self._revoked()),
        )
        state = replace(state, decision=decision.action, decision_reason=decision.reason, decision_rule=decision.rule)
        if decision.action is not Action.SIGNAL:
            self._audit_decision(target, memory, state, decision)
            return state
        memory.logged = None
        if not may_act():
            return replace(state, decision=Action.NONE, decision_reason="scan abandoned or config replaced")
        self._on_observed(state)  # the drift is visible while the reload is confirmed, which may take a while
        memory.reloading = state  # a run whose deadline comes meanwhile shows this state, not scan_deadline
        try:
            after = self._actor.reload(target, memory, state, channel, may_act)
        finally:
            memory.reloading = None
        return replace(
            after, decision=state.decision, decision_reason=state.decision_reason, decision_rule=decision.rule
        )

    def _audit_decision(
        self, target: GunicornTarget, memory: Memory, state: TargetState, decision: policy.Decision
    ) -> None:
        """Log a decision at info when its rule changes; the same rule again is a debug line, not a flood."""
        key = (decision.action, decision.rule, decision.master)
        quiet = decision.action is Action.NONE or key == memory.logged
        memory.logged = key
        log = self._log.debug if quiet else self._log.info
        log("reload decision", extra=audit(target, state, decision.action, decision.reason))
