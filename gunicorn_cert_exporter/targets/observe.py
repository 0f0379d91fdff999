"""Observe one target: its cert and key files, its master through its channel, the leaves it serves."""

from __future__ import annotations

from collections.abc import Callable

from gunicorn_cert_exporter.config import GunicornTarget
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
from gunicorn_cert_exporter.sources.files import FileScanner, Wanted
from gunicorn_cert_exporter.targets import drift
from gunicorn_cert_exporter.targets.channel import MasterChannel
from gunicorn_cert_exporter.targets.memory import Memory
from gunicorn_cert_exporter.vocabulary import Action


class Observer:
    """Join a target's files, master and probed endpoint into its TargetState, and update what is remembered."""

    def __init__(self, *, scanner: FileScanner, clock: Callable[[], float]) -> None:
        self._scanner = scanner
        self._clock = clock
        self._files: dict[str, FileResult] = {}  # the last scan of each file: unchanged files are not read again

    def observe(
        self, target: GunicornTarget, memory: Memory, endpoint: EndpointResult, channel: MasterChannel
    ) -> TargetState:
        """Scan the files, locate the master, compare the served leaves; remember drift and the last reload."""
        now = self._clock()
        cert = self._scanner.scan_one(Wanted(target.cert_file), self._files.get(target.cert_file))
        key = self._scanner.scan_one(Wanted(target.key_file), self._files.get(target.key_file))
        self._files[target.cert_file], self._files[target.key_file] = cert, key
        master = channel.locate(previous=memory.master, previous_at=memory.master_at, now=now)
        _remember_master(memory, master, now)
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

    def unobserved(
        self,
        target: GunicornTarget,
        memory: Memory,
        channel: MasterChannel,
        *,
        down: EndpointReason,
        blind: MasterReason,
        reason: str,
        decision: Action,
    ) -> TargetState:
        """Return the state of a target not looked at this time (its scan raised, or outlived the deadline).

        The addresses last probed stay, down with ``down`` and no drift (unknown, never a false mismatch); the
        master is down with ``blind`` on its channel, under the pid last seen. Nothing is remembered or decided
        here: a target not looked at never leads to a reload.
        """
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
        master = MasterState(
            pid=last.pid,
            start_time=last.start_time,
            error=blind,
            detail=reason,
            channel=channel.name,
        )
        return TargetState(
            name=target.name,
            cert=cert,
            key=key,
            endpoint=endpoint,
            master=master,
            drift=tuple(AddressDrift(address=a, mismatch=False) for a in known),
            key_match=drift.key_match(cert, key),
            last_reload=memory.last_reload,
            reload_signals=memory.signals_total,
            reload_failures=memory.failures_total,
            decision=decision,
            decision_reason=reason,
            history_problem=memory.history_problem,
        )


def _remember_master(memory: Memory, master: MasterState, now: float) -> None:
    """Keep the last look at the master, and move the last reload forward when the master shows one."""
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
