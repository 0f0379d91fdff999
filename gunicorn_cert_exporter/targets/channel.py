"""How a target's master is reached: one MasterChannel per way (pidfile or pid, control socket), chosen once.

``channel_for(target)`` is the only place that asks which way a target names; everything after it (observe,
act, confirm) goes through the one interface. Discovery creates targets, never a new channel.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from gunicorn_cert_exporter.config import GunicornTarget
from gunicorn_cert_exporter.config_values import parse_ip
from gunicorn_cert_exporter.model import MasterState
from gunicorn_cert_exporter.reasons import MasterReason
from gunicorn_cert_exporter.sources import control_socket, gunicorn
from gunicorn_cert_exporter.sources.gunicorn import MasterIdentity
from gunicorn_cert_exporter.sources.listeners import Binding
from gunicorn_cert_exporter.vocabulary import Channel


class AbandonedError(Exception):
    """The run lost the right to act (config replaced, deadline passed) between its decision and the send."""


class MasterChannel(Protocol):
    """One way of reaching a target's master: prove it, watch its workers, ask it to reload."""

    @property
    def name(self) -> Channel:
        """Name the channel (the ``channel`` label of ``gunicorn_cert_master_info``)."""

    def locate(self, *, previous: MasterState | None, previous_at: float | None, now: float) -> MasterState:
        """Find the master and prove that it serves the target's port; ``previous`` is the last look."""

    def same_master(self, identity: MasterIdentity) -> bool:
        """Tell whether the master reached now is the very one proven earlier (pid and start time)."""

    def workers_now(self, identity: MasterIdentity) -> set[int] | None:
        """Return the pids of the master's live workers, or None if it can't be seen as the same master."""

    def send_reload(self, identity: MasterIdentity, *, may_act: Callable[[], bool]) -> None:
        """Ask that very master to reload.

        Raise AbandonedError if ``may_act()`` is false just before sending, ProcessLookupError if another master
        answers now, another OSError if the request failed.
        """

    def sent(self, pid: int) -> str:
        """Say, for the audit line, how a reload was sent to ``pid``."""


def channel_for(target: GunicornTarget, *, sender: gunicorn.SignalSender, clock: Callable[[], float]) -> MasterChannel:
    """Return the channel of a target: its control socket if one is set, else its pidfile or pid."""
    if target.control_socket is None:
        return PidChannel(target, sender=sender)
    return SocketChannel(target, target.control_socket, clock=clock)


def _binding(target: GunicornTarget) -> Binding:
    host, port = target.binding()
    return Binding(port=port, host=parse_ip(host) if host else None)


class PidChannel:
    """A master named by a pidfile or a pid, proven through /proc and signalled through a pidfd."""

    def __init__(self, target: GunicornTarget, *, sender: gunicorn.SignalSender) -> None:
        self._target, self._sender = target, sender
        self.name: Channel = "pidfile" if target.pidfile else "pid"

    def locate(self, *, previous: MasterState | None, previous_at: float | None, now: float) -> MasterState:
        """Read the pidfile (or take the pid) and prove the process is the master serving the target's port."""
        del previous, previous_at, now  # /proc says it all, each time
        target = self._target
        state = gunicorn.locate(pidfile=target.pidfile, pid=target.pid, binding=_binding(target))
        return replace(state, channel=self.name)

    def same_master(self, identity: MasterIdentity) -> bool:
        """Tell whether the pid still names the proven master (its start time)."""
        return gunicorn.still_same_master(identity)

    def workers_now(self, identity: MasterIdentity) -> set[int] | None:
        """Return the master's live workers as /proc shows them, or None if it is no Gunicorn master now."""
        master = gunicorn.inspect(identity.pid)
        return {w.pid for w in master.workers} if master.up else None

    def send_reload(self, identity: MasterIdentity, *, may_act: Callable[[], bool]) -> None:
        """SIGHUP the master; the sender proves it is the same process through a pidfd."""
        if not may_act():
            raise AbandonedError
        self._sender(identity, signal.SIGHUP)

    def sent(self, pid: int) -> str:
        """Say that a SIGHUP was sent."""
        return f"SIGHUP sent to {pid}"


class SocketChannel:
    """A master reached through its control socket (Gunicorn 25.1+), also from another PID namespace."""

    name: Channel = "control_socket"

    def __init__(self, target: GunicornTarget, path: str, *, clock: Callable[[], float]) -> None:
        self._target, self._path, self._clock = target, path, clock

    def _observe(self) -> control_socket.ControlView:
        return control_socket.observe(self._path, timeout=self._target.timeout)

    def locate(self, *, previous: MasterState | None, previous_at: float | None, now: float) -> MasterState:
        """Ask the master about itself; proven when it listens on the target's port (and matches the pidfile)."""
        target = self._target
        try:
            view = self._observe()
        except control_socket.ControlError as exc:
            return MasterState(error=exc.reason, detail=exc.detail, channel=self.name)
        port = _binding(target).port
        state = control_socket.master_state(view=view, port=port, previous=previous, previous_at=previous_at, now=now)
        if state.up and (target.pidfile or target.pid):
            # Cross-check where the pid is visible (same PID namespace); elsewhere the pidfile's pid means nothing.
            local = gunicorn.locate(pidfile=target.pidfile, pid=target.pid)
            if local.up and local.pid != view.pid:
                detail = f"the control socket's master is {view.pid}, the pidfile names {local.pid}"
                return replace(state, error=MasterReason.PID_MISMATCH, detail=detail)
        return state

    def _same(self, view: control_socket.ControlView, identity: MasterIdentity) -> bool:
        return control_socket.same_master(view, pid=identity.pid, start_time=identity.start_time, now=self._clock())

    def same_master(self, identity: MasterIdentity) -> bool:
        """Tell whether the socket's master now is the proven one: same pid, same start time."""
        try:
            return self._same(self._observe(), identity)
        except control_socket.ControlError:
            return False

    def workers_now(self, identity: MasterIdentity) -> set[int] | None:
        """Return the workers the master reports, or None if the socket is away (re-created around a fork)."""
        try:
            view = self._observe()
        except control_socket.ControlError:
            return None
        return set(view.workers) if self._same(view, identity) else None

    def send_reload(self, identity: MasterIdentity, *, may_act: Callable[[], bool]) -> None:
        """Ask the master to reload if it is still the same one (a restarted master may have the same pid)."""
        if not self._same(self._observe(), identity):  # a ControlError here is an OSError: the send failed
            raise ProcessLookupError(identity.pid)
        if not may_act():
            raise AbandonedError
        control_socket.reload(self._path, timeout=self._target.timeout, pid=identity.pid)

    def sent(self, pid: int) -> str:
        """Say that the reload went through the control socket."""
        return f"reload sent through the control socket to {pid}"
