"""Act on a decision to reload: record the attempt, send the reload through the channel, confirm the new leaf."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Literal

from gunicorn_cert_exporter.config import GunicornTarget
from gunicorn_cert_exporter.model import EndpointResult, TargetState
from gunicorn_cert_exporter.sources.endpoints import Prober
from gunicorn_cert_exporter.sources.gunicorn import MasterIdentity
from gunicorn_cert_exporter.targets.channel import AbandonedError, MasterChannel
from gunicorn_cert_exporter.targets.history import History
from gunicorn_cert_exporter.targets.memory import Memory
from gunicorn_cert_exporter.targets.observe import Observer
from gunicorn_cert_exporter.targets.policy import HOUR
from gunicorn_cert_exporter.vocabulary import Action

Outcome = Literal["confirmed", "not_confirmed", "signal_failed", "history_unwritable", "withdrawn"]
"""How a reload ended (the ``outcome`` of its audit line; a decision that sent nothing logs its action)."""

_VERIFY_INTERVAL = 0.2


class Actor:
    """Reload a target's master and confirm that only the new leaf is served."""

    def __init__(
        self,
        *,
        prober: Prober,
        observer: Observer,
        history: History,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        logger: logging.Logger,
    ) -> None:
        self._prober, self._observer, self._history = prober, observer, history
        self._clock, self._sleep, self._log = clock, sleep, logger

    def reload(
        self,
        target: GunicornTarget,
        memory: Memory,
        state: TargetState,
        channel: MasterChannel,
        may_act: Callable[[], bool],
    ) -> TargetState:
        """Record the attempt, send the reload, confirm it; return the target as observed afterwards."""
        master = state.master
        if master.pid is None or master.start_time is None:  # decide() proved the master; keep mypy sure
            return state
        identity = MasterIdentity(master.pid, master.start_time)
        sent_at = self._clock()
        # Every attempt counts toward cooldown and max_per_hour, failed ones too: nothing may retry in a loop.
        window = max(HOUR, target.reload.cooldown)
        memory.signals = [t for t in memory.signals if sent_at - t < window] + [sent_at]
        # Written before the reload: an exporter killed right after sending still remembers it at its next start.
        problem = self._history.record(target.name, tuple(memory.signals))
        if problem is not None:
            memory.history_problem = problem
            self._log.warning("reload refused", extra=audit(target, state, "history_unwritable", problem))
            return replace(state, history_problem=problem)
        memory.history_problem = ""
        try:
            channel.send_reload(identity, may_act=may_act)
        except AbandonedError:
            self._log.warning("reload withdrawn", extra=audit(target, state, "withdrawn", "scan abandoned"))
            return state
        except OSError as exc:  # ProcessLookupError, PermissionError, a control socket that failed
            memory.failures_total += 1
            self._log.warning("reload failed", extra=audit(target, state, "signal_failed", type(exc).__name__))
            return replace(state, reload_failures=memory.failures_total)
        memory.signals_total += 1
        endpoint, confirmed = self._confirm(target, state, identity, channel)
        if not confirmed:
            memory.failures_total += 1
        new_state = self._observer.observe(target, memory, endpoint, channel)
        if confirmed:
            memory.last_reload = max(memory.last_reload or 0.0, sent_at)
            new_state = replace(new_state, last_reload=memory.last_reload)
        took = f"{self._clock() - sent_at:.2f}s"
        outcome: Outcome = "confirmed" if confirmed else "not_confirmed"
        log = self._log.info if confirmed else self._log.warning
        log("reload", extra=audit(target, new_state, outcome, f"{channel.sent(identity.pid)}, {took}"))
        return new_state

    def _confirm(
        self, target: GunicornTarget, state: TargetState, identity: MasterIdentity, channel: MasterChannel
    ) -> tuple[EndpointResult, bool]:
        """Re-probe until only the new leaf is served: every pre-reload worker gone, every address on the new leaf."""
        # Old workers keep accepting for a moment after HUP; one probe that sees the new leaf proves nothing.
        old_workers = {w.pid for w in state.master.workers}
        wanted = state.file_leaf.fingerprint_sha256 if state.file_leaf else ""
        deadline = self._clock() + target.reload.verify_timeout
        endpoint = state.endpoint
        while True:
            self._sleep(_VERIFY_INTERVAL)
            workers = channel.workers_now(identity)
            replaced = bool(workers) and not old_workers & (workers or set())
            if replaced:  # probe only once no old worker can answer
                endpoint = self._prober.probe(target.as_endpoint())
                served = [a.leaf.fingerprint_sha256 for a in endpoint.addresses if a.leaf is not None]
                if served and all(fp == wanted for fp in served):
                    return endpoint, True
            if self._clock() >= deadline:
                return endpoint, False


def audit(target: GunicornTarget, state: TargetState, outcome: Outcome | Action, reason: str) -> dict[str, object]:
    """Return the fields of a reload's audit line (logger ``gunicorn_cert_exporter.reload``)."""
    leaf = state.file_leaf
    served = sorted({a.leaf.fingerprint_sha256[:16] for a in state.endpoint.addresses if a.leaf is not None})
    return {
        "target": target.name,
        "outcome": str(outcome),
        "reason": reason,
        "pid": state.master.pid,
        "file_leaf": leaf.fingerprint_sha256[:16] if leaf else "",
        "served_leaf": ",".join(served),
        "dry_run": target.reload.dry_run,
    }
