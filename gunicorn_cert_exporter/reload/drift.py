"""Files + endpoint + master to drift and reload decisions. Pure: every input is a value, the clock included."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from gunicorn_cert_exporter.config import ReloadConfig
from gunicorn_cert_exporter.model import AddressDrift, CertFacts, EndpointResult, FileResult, TargetState, clamp_to_now

HOUR = 3600.0


class Action(str, Enum):
    """What to do about a target this scan."""

    NONE = "none"
    WAIT = "wait"
    BLOCKED = "blocked"
    SIGNAL = "signal"
    DRY_RUN = "dry_run"


@dataclass(frozen=True, slots=True)
class Decision:
    """A reload decision, the rule that made it (a stable name) and the reason in words (may carry numbers)."""

    action: Action
    reason: str
    rule: str = ""


def key_match(cert: FileResult, key: FileResult) -> bool | None:
    """Tell whether key_file holds the private key of cert_file's leaf; None if either can't be read."""
    if not cert.certs or not key.keys:
        return None
    spki = key.keys[0].spki_sha256
    return None if spki is None else spki == cert.certs[0].spki_sha256


def compare(
    *, endpoint: EndpointResult, file_leaf: CertFacts | None, previous: Sequence[AddressDrift], now: float
) -> tuple[AddressDrift, ...]:
    """Compare the leaf served on each address with the file's leaf; keep when each drift began."""
    before = {d.address: d for d in previous}
    out = []
    for result in endpoint.addresses:
        served = result.leaf
        mismatch = (
            served is not None and file_leaf is not None and served.fingerprint_sha256 != file_leaf.fingerprint_sha256
        )
        if not mismatch:
            out.append(AddressDrift(address=result.address, mismatch=False))
            continue
        old = before.get(result.address)
        kept = clamp_to_now(old.since, now=now) if old is not None and old.mismatch else None
        since = kept if kept is not None else now
        out.append(AddressDrift(address=result.address, mismatch=True, since=since))
    return tuple(out)


def _files_block(state: TargetState, now: float) -> Decision | None:
    """Return why the files on disk can't be served (so a HUP would hurt), or None."""
    leaf = state.file_leaf
    if leaf is None or not state.cert.up:
        return Decision(Action.BLOCKED, "cert_file does not parse", "cert_file")
    if not state.key.up:
        return Decision(Action.BLOCKED, "key_file does not parse", "key_file")
    if state.key_match is not True:
        return Decision(Action.BLOCKED, "key_file does not match cert_file", "key_match")
    if not leaf.not_before <= now < leaf.not_after:
        return Decision(Action.BLOCKED, "cert_file is not valid now", "validity")
    return None


def decide(*, rules: ReloadConfig, state: TargetState, signals: Sequence[float], now: float) -> Decision:
    """Apply every safety rule of a reload, in order; the first that fails explains the decision.

    ``signals`` are the times of earlier attempts. That the master is still the one proven here (pid and start
    time) is checked again when the signal is sent, through a pidfd.
    """
    drifting = [d for d in state.drift if d.mismatch]
    if not drifting:
        if not any(a.leaf is not None for a in state.endpoint.addresses):
            return Decision(Action.NONE, "drift unknown: no address served a certificate", "no_drift")
        return Decision(Action.NONE, "no drift", "no_drift")
    if not rules.enabled:
        return Decision(Action.NONE, "reload disabled", "disabled")
    began = min(d.since or now for d in drifting)
    if now - began < rules.after:
        return Decision(Action.WAIT, f"drift for {now - began:.0f}s, waiting for {rules.after:.0f}s", "after")
    files = _files_block(state, now)
    if files is not None:
        return files
    master = state.master
    if not master.up:
        why = master.error.value if master.error else "unknown"
        return Decision(Action.BLOCKED, f"master not proven ({why}): {master.detail}", f"master:{why}")
    if master.successor is not None:
        # USR2 in progress: a HUP to the old master leaves the new one serving what it loaded.
        return Decision(Action.BLOCKED, f"USR2 upgrade in progress (new master {master.successor})", "usr2")
    workers_since = master.workers_since
    if workers_since is not None and state.cert.changed_at is not None and workers_since > state.cert.changed_at:
        # Every worker started after the file changed and still serves another leaf: a HUP would not help.
        return Decision(Action.BLOCKED, "workers already restarted since cert_file changed", "workers_restarted")
    if signals and now - max(signals) < rules.cooldown:
        return Decision(Action.BLOCKED, f"cooldown: last attempt {now - max(signals):.0f}s ago", "cooldown")
    if sum(1 for t in signals if now - t < HOUR) >= rules.max_per_hour:
        return Decision(Action.BLOCKED, f"max_per_hour ({rules.max_per_hour}) reached", "max_per_hour")
    if rules.dry_run:
        return Decision(Action.DRY_RUN, "every rule allows a reload (dry run)", "dry_run")
    return Decision(Action.SIGNAL, "every rule allows a reload", "allowed")
