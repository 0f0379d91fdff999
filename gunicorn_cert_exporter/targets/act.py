"""Act on a decision to reload: record the attempt, send the reload through the channel, confirm the new leaf."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Literal

from gunicorn_cert_exporter.config import GunicornTarget
from gunicorn_cert_exporter.config_values import split_host_port
from gunicorn_cert_exporter.model import EndpointResult, TargetState
from gunicorn_cert_exporter.runbook import FailureReason, PreviousLeaf
from gunicorn_cert_exporter.sources.endpoints import Prober
from gunicorn_cert_exporter.sources.gunicorn import MasterIdentity
from gunicorn_cert_exporter.sources.health import Health, get_health
from gunicorn_cert_exporter.targets.channel import AbandonedError, MasterChannel
from gunicorn_cert_exporter.targets.history import KEEP_PREVIOUS, History
from gunicorn_cert_exporter.targets.memory import Memory
from gunicorn_cert_exporter.targets.observe import Observer, failure_reasons
from gunicorn_cert_exporter.targets.policy import HOUR
from gunicorn_cert_exporter.vocabulary import Action

Outcome = Literal["confirmed", "not_confirmed", "signal_failed", "history_unwritable", "withdrawn"]
"""How a reload ended (the ``outcome`` of its audit line; a decision that sent nothing logs its action)."""

_VERIFY_INTERVAL = 0.2
_HEALTH_INTERVAL = 1.0


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
        problem = self._history.record(target.name, tuple(memory.signals), tuple(memory.previous_leaves))
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
            memory.failure_reasons["signal_failed"] = memory.failure_reasons.get("signal_failed", 0) + 1
            self._log.warning("reload failed", extra=audit(target, state, "signal_failed", type(exc).__name__))
            return replace(state, reload_failures=memory.failures_total, failure_reasons=failure_reasons(memory))
        memory.signals_total += 1
        endpoint, failure, seen = self._confirm(target, state, identity, channel)
        if failure is not None:
            memory.failures_total += 1
            memory.failure_reasons[failure] = memory.failure_reasons.get(failure, 0) + 1
        else:
            self._remember_previous(target, memory, state, sent_at)
        new_state = self._observer.observe(target, memory, endpoint, channel)
        if failure is None:
            memory.last_reload = max(memory.last_reload or 0.0, sent_at)
            new_state = replace(new_state, last_reload=memory.last_reload)
        took = f"{self._clock() - sent_at:.2f}s"
        outcome: Outcome = "confirmed" if failure is None else "not_confirmed"
        log = self._log.info if failure is None else self._log.warning
        why = f"{channel.sent(identity.pid)}, {took}; {seen}" if failure is None else f"{failure}: {seen}; {took}"
        log("reload", extra=audit(target, new_state, outcome, why))
        return new_state

    def _remember_previous(self, target: GunicornTarget, memory: Memory, state: TargetState, at: float) -> None:
        """Keep the leaf served before a confirmed reload (what a rollback goes back to), on disk when persistent."""
        wanted = state.file_leaf.fingerprint_sha256 if state.file_leaf else ""
        old = [a.leaf for a in state.endpoint.addresses if a.leaf is not None and a.leaf.fingerprint_sha256 != wanted]
        if not old:
            return
        leaf = PreviousLeaf(fingerprint_sha256=old[0].fingerprint_sha256, not_after=old[0].not_after, replaced_at=at)
        memory.previous_leaves = [*memory.previous_leaves, leaf][-KEEP_PREVIOUS:]
        problem = self._history.record(target.name, tuple(memory.signals), tuple(memory.previous_leaves))
        if problem is not None:
            memory.history_problem = problem

    def _confirm(
        self, target: GunicornTarget, state: TargetState, identity: MasterIdentity, channel: MasterChannel
    ) -> tuple[EndpointResult, FailureReason | None, str]:
        """Re-probe until only the new leaf is served by as many workers as before, and the health path answers.

        Return the endpoint last probed, why the reload is not confirmed (None: confirmed) and what was seen.
        """
        # Old workers keep accepting for a moment after HUP; one probe that sees the new leaf proves nothing.
        old_workers = {w.pid for w in state.master.workers}
        wanted = state.file_leaf.fingerprint_sha256 if state.file_leaf else ""
        deadline = self._clock() + target.reload.verify_timeout
        endpoint = state.endpoint
        failure: FailureReason | None = "not_served"
        seen = "the new leaf was not served"
        health_due = 0.0
        while True:
            self._sleep(_VERIFY_INTERVAL)
            workers = channel.workers_now(identity) or set()
            if workers and not old_workers & workers:  # probe only once no old worker can answer
                endpoint = self._prober.probe(target.as_endpoint())
                served = [a.leaf.fingerprint_sha256 for a in endpoint.addresses if a.leaf is not None]
                if not (served and all(fp == wanted for fp in served)):
                    failure, seen = "not_served", f"new leaf on {served.count(wanted)}/{len(endpoint.addresses)}"
                elif len(workers) < len(old_workers):
                    failure, seen = "workers_missing", f"{len(workers)} of {len(old_workers)} workers alive"
                elif target.reload.health is not None and self._clock() >= health_due:
                    health_due = self._clock() + _HEALTH_INTERVAL  # a failing path is not hammered
                    health = self._health(target)
                    failure, seen = (None, health.detail) if health.healthy else ("unhealthy", health.detail)
                elif target.reload.health is None:
                    failure, seen = None, f"new leaf served, {len(workers)} workers"
                if failure is None:
                    return endpoint, None, seen
            if self._clock() >= deadline:
                return endpoint, failure, seen

    def _health(self, target: GunicornTarget) -> Health:
        """GET the health path through the target's endpoint, verified as the endpoint is probed."""
        assert target.reload.health is not None  # noqa: S101  (the caller checked)
        host, port = split_host_port(target.endpoint)
        return get_health(
            host=host,
            port=port,
            path=target.reload.health.path,
            expect=target.reload.health.expected(),
            server_name=target.sni,
            ca_file=target.ca_file,
            timeout=target.timeout,
        )


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
