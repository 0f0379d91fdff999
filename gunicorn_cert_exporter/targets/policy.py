"""The reload policy: a target's state, its rules and its earlier attempts to a decision. Pure: the clock included."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from gunicorn_cert_exporter.config import ReloadConfig
from gunicorn_cert_exporter.model import TargetState
from gunicorn_cert_exporter.reasons import MasterReason
from gunicorn_cert_exporter.vocabulary import Action, Rule

HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class Decision:
    """A reload decision, the rule that made it and the reason in words (may carry numbers).

    ``master`` is why the master is not proven, when that is the rule: a change of it is a new decision to log.
    """

    action: Action
    reason: str
    rule: Rule
    master: MasterReason | None = None


def _files_block(state: TargetState, now: float) -> Decision | None:
    """Return why the files on disk can't be served (so a HUP would hurt), or None."""
    leaf = state.file_leaf
    if leaf is None or not state.cert.up:
        return Decision(Action.BLOCKED, "cert_file does not parse", Rule.CERT_FILE)
    if not state.key.up:
        return Decision(Action.BLOCKED, "key_file does not parse", Rule.KEY_FILE)
    if state.key_match is not True:
        return Decision(Action.BLOCKED, "key_file does not match cert_file", Rule.KEY_MATCH)
    if not leaf.not_before <= now < leaf.not_after:
        return Decision(Action.BLOCKED, "cert_file is not valid now", Rule.VALIDITY)
    return None


def _master_block(state: TargetState) -> Decision | None:
    """Return why the master can't be sent a reload now, or None."""
    master = state.master
    if not master.up:
        why = master.error.value if master.error else "unknown"
        return Decision(Action.BLOCKED, f"master not proven ({why}): {master.detail}", Rule.MASTER, master.error)
    if master.successor is not None:
        # USR2 in progress: a HUP to the old master leaves the new one serving what it loaded.
        return Decision(Action.BLOCKED, f"USR2 upgrade in progress (new master {master.successor})", Rule.USR2)
    workers_since = master.workers_since
    if workers_since is not None and state.cert.changed_at is not None and workers_since > state.cert.changed_at:
        # Every worker started after the file changed and still serves another leaf: a HUP would not help.
        return Decision(Action.BLOCKED, "workers already restarted since cert_file changed", Rule.WORKERS_RESTARTED)
    return None


def _workers_block(state: TargetState) -> Decision | None:
    """Return why the workers could not load the files after a HUP, or None (unknown access does not block)."""
    access = state.access
    if access is None or not access.denied:
        return None
    first = access.denied[0]
    names = ", ".join(f"{f.file}_file" if f.file != "ca_certs" else "ca_certs" for f in access.denied)
    why = f"the workers can't read {names}: {first.detail}"
    return Decision(Action.BLOCKED, why, Rule.WORKER_CANNOT_READ)


def next_window(rules: ReloadConfig, *, now: float) -> float | None:
    """Return when reload.window next opens (``now`` while it is open); None without a window."""
    return rules.window.window().next_opening(now) if rules.window is not None else None


def _window_wait(rules: ReloadConfig, state: TargetState, now: float) -> Decision | None:
    """Return a wait while outside reload.window, unless a served leaf expires within urgent_before."""
    opens = next_window(rules, now=now)
    if opens is None or opens <= now:
        return None
    served = [a.leaf.not_after for a in state.endpoint.addresses if a.leaf is not None]
    if served and min(served) - now < rules.urgent_before:
        return None  # waiting for the window would let the served leaf expire: reload now
    when = dt.datetime.fromtimestamp(opens, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    return Decision(Action.WAIT, f"outside reload.window; it next opens at {when}", Rule.WINDOW)


def decide(
    *, rules: ReloadConfig, state: TargetState, signals: Sequence[float], now: float, served_revoked: bool = False
) -> Decision:
    """Apply every safety rule of a reload, in order; the first that fails explains the decision.

    ``signals`` are the times of earlier attempts. That the master is still the one proven here (pid and start
    time) is checked again when the reload is sent, by its channel. ``served_revoked``: the served leaf is revoked
    and cert_file's is not, so ``after`` is not waited for (every other rule still holds).
    """
    drifting = [d for d in state.drift if d.mismatch]
    if not drifting:
        if not any(a.leaf is not None for a in state.endpoint.addresses):
            return Decision(Action.NONE, "drift unknown: no address served a certificate", Rule.NO_DRIFT)
        return Decision(Action.NONE, "no drift", Rule.NO_DRIFT)
    if not rules.enabled:
        return Decision(Action.NONE, "reload disabled", Rule.DISABLED)
    began = min(d.since or now for d in drifting)
    if now - began < rules.after and not served_revoked:
        return Decision(Action.WAIT, f"drift for {now - began:.0f}s, waiting for {rules.after:.0f}s", Rule.AFTER)
    blocked = _files_block(state, now) or _master_block(state) or _workers_block(state)
    if blocked is not None:
        return blocked
    if signals and now - max(signals) < rules.cooldown:
        return Decision(Action.BLOCKED, f"cooldown: last attempt {now - max(signals):.0f}s ago", Rule.COOLDOWN)
    if sum(1 for t in signals if now - t < HOUR) >= rules.max_per_hour:
        return Decision(Action.BLOCKED, f"max_per_hour ({rules.max_per_hour}) reached", Rule.MAX_PER_HOUR)
    waiting = _window_wait(rules, state, now)
    if waiting is not None:
        return waiting
    if rules.dry_run:
        return Decision(Action.DRY_RUN, "every rule allows a reload (dry run)", Rule.DRY_RUN)
    return Decision(Action.SIGNAL, "every rule allows a reload", Rule.ALLOWED)
