"""The endpoints scan in a child process: its handshakes never hold the GIL the HTTP server needs.

The exporter's event loop shares one interpreter with the scans. Each probe runs Python between its system calls
(socket set-up, the served chain's facts), and with hundreds of endpoints the probe threads take the GIL in turn for
the length of every endpoints scan: a scrape then waits behind them after each of its own system calls. Here a child
process (``probe_child.py``) probes and streams each endpoint's result back as it completes (frozen values). The
Gunicorn targets scan and ``/probe`` keep their probes in the exporter: they are few.

A scan asks the child for its endpoints and waits until each has answered, or until the scan's deadline: then every
result that arrived is published, and each endpoint still waiting or being probed is ``scan_deadline`` (down, on
the addresses and certificates it last had), while the child goes on with it: the next scan publishes what arrived
meanwhile, and asks first for what this one did not reach. A slow fleet is never a reason to replace the child;
one that died, or that sent neither a result nor its heartbeat for ``silence`` seconds (``STARTUP`` before its
first word: a loaded machine may take that long to import), is replaced, and the endpoints it did not answer for
are ``scan_failed`` on their last addresses. The child exits when the exporter does, however it ends: its end of
the socket closes, and it watches its parent.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from multiprocessing.connection import Connection

from gunicorn_cert_exporter.config import EndpointConfig
from gunicorn_cert_exporter.model import EndpointReason, EndpointResult, down_at
from gunicorn_cert_exporter.sources import probe_child
from gunicorn_cert_exporter.sources.endpoints import series_key

_log = logging.getLogger("gunicorn_cert_exporter.endpoints")
_POLL = 0.5  # how often a waiting scan looks whether its child is still alive and heard from
_MAX_DYING = 3  # killed children that have not exited yet (stuck in the kernel): no new one past this
SILENCE = 10.0
"""Seconds without a result or a heartbeat after which the child is taken for stuck and replaced."""
STARTUP = 60.0
"""Seconds a new child may take to say its first word: killing one still importing would start a colder one."""
DEADLINE_DETAIL = "not probed by the scan's deadline: still queued or being probed; its last result is kept"

_Key = tuple[str, str]


class _Child:
    """One probe process, and the thread that reads what it sends."""

    def __init__(self, log: tuple[str, str], on_message: Callable[[_Child, object], None]) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            fd = theirs.fileno()
            command = [sys.executable, "-m", probe_child.__name__, str(fd), *log]
            self.process = subprocess.Popen(command, pass_fds=(fd,), stdin=subprocess.DEVNULL)
        self.connection = Connection(ours.detach())
        self.heard = time.monotonic()  # the last result or heartbeat
        self.spoke = False  # it has sent something: it started
        self.gone = False  # its end of the socket closed: it exited, or was killed
        self.killed = False
        self._on_message = on_message
        threading.Thread(target=self._read, name="probe-process-reader", daemon=True).start()
        threading.Thread(target=self._reap, name="probe-reaper", daemon=True).start()

    def _reap(self) -> None:
        """Reap the child as soon as it exits, between scans too: a killed child is no zombie until the next scan."""
        with contextlib.suppress(ChildProcessError):  # already reaped by a scan
            os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOWAIT)  # waits without reaping: Popen reaps
        self.process.poll()  # reaps and sets returncode; if a scan holds Popen's lock, that scan reaps it

    def alive(self) -> bool:
        return not (self.gone or self.killed) and self.process.poll() is None

    def kill(self) -> None:
        """Send SIGKILL (any thread may); it counts as gone from now on."""
        self.killed = True
        if self.process.poll() is None:
            self.process.kill()

    def end(self) -> bool:
        """Kill it and close its socket; tell whether it has exited."""
        self.kill()
        self.connection.close()
        try:
            self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return False  # stuck in the kernel (a hung mount): SIGKILL takes effect when the call returns
        return True

    def _read(self) -> None:
        while True:
            try:
                message: object = self.connection.recv()
            except (EOFError, OSError):
                break
            except Exception:  # noqa: BLE001  (a message this side can't read is a bug, not a dead child)
                _log.exception("unreadable message from the probe process", extra={"pid": self.process.pid})
                continue
            self.heard, self.spoke = time.monotonic(), True
            self._on_message(self, message)
        self.gone = True
        self._on_message(self, None)


class ProbeProcess:
    """Probe endpoints in a child process, started at the first scan and replaced only when it dies or goes silent."""

    def __init__(self, *, log: tuple[str, str] = ("info", "logfmt"), silence: float = SILENCE) -> None:
        """``log``: the exporter's log level and format, for the child's own logs."""
        self._log_setup = log
        self._silence = silence
        self._scan = threading.Lock()  # one scan at a time talks to the child
        self._cond = threading.Condition()  # guards what follows; the reader thread notifies it
        self._child: _Child | None = None
        self._dying: list[_Child] = []
        self._fresh: dict[_Key, EndpointResult] = {}  # arrived, not published yet
        self._arrivals = 0
        self._arrived: dict[_Key, int] = {}  # the arrival number of each endpoint's last result
        self._last: dict[_Key, EndpointResult] = {}  # what the last scan published for each endpoint
        self._abandoned = False
        self._closed = False

    @property
    def pid(self) -> int | None:
        """Return the child's pid, if one runs."""
        child = self._child
        return child.process.pid if child is not None and child.alive() else None

    def probe_all(
        self, configs: Sequence[EndpointConfig], *, concurrency: int, deadline: float = math.inf
    ) -> tuple[EndpointResult, ...]:
        """Return every endpoint's result: as probed, or ``scan_deadline`` if not by ``deadline`` (monotonic)."""
        with self._scan:
            if not configs:
                self._stop()  # no endpoints left in the config: no idle process
                return ()
            child, problem = self._ready()
            if child is None:
                return tuple(self._down(config, EndpointReason.SCAN_FAILED, problem) for config in configs)
            with self._cond:
                self._abandoned, since = False, self._arrivals
                known = {key: tuple(a.address for a in r.addresses) for key, r in self._last.items()}
            with contextlib.suppress(OSError):  # it is gone: the wait below sees it (anything else is a bug)
                child.connection.send((list(configs), concurrency, known))
            self._wait(child, [series_key(c) for c in configs], since, deadline)
            if not child.alive() and not self._closed:
                _log.warning("the probe process ended before answering", extra={"exitcode": child.process.poll()})
            with self._cond:
                results = tuple(self._result(config, ended=not child.alive()) for config in configs)
                keys = {series_key(config) for config in configs}  # only the config in force is remembered
                self._last = {key: r for key, r in self._last.items() if key in keys}
                self._fresh = {key: r for key, r in self._fresh.items() if key in keys}
            if not child.alive():
                self._stop()
            return results

    def abandon(self) -> None:
        """Let the scan waiting on the child publish now (the scheduler's watchdog); the child goes on probing."""
        with self._cond:
            self._abandoned = True
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the child (it holds nothing worth a graceful stop); a scan waiting on it gets ``scan_failed``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        child = self._child
        if child is None:
            return
        child.kill()
        if self._scan.acquire(timeout=1):  # no scan waiting on it: close its socket here
            try:
                self._stop()
            finally:
                self._scan.release()

    def _ready(self) -> tuple[_Child | None, str]:
        """Return the child, started if none runs, or why none may start."""
        child = self._child
        if child is not None and child.alive():
            return child, ""
        self._stop()
        self._dying = [c for c in self._dying if c.process.poll() is None]
        if self._closed:
            return None, "the exporter is stopping"
        if len(self._dying) >= _MAX_DYING:
            return None, "earlier probe processes did not exit"
        child = self._child = _Child(self._log_setup, self._received)
        _log.info("probe process started", extra={"pid": child.process.pid})
        return child, ""

    def _wait(self, child: _Child, keys: list[_Key], since: int, deadline: float) -> None:
        """Wait until every endpoint answered, the deadline, an abandon, or the child is gone or silent too long."""
        with self._cond:
            while not (self._abandoned or self._closed or not child.alive()):
                if all(self._arrived.get(key, -1) > since for key in keys):
                    return
                now = time.monotonic()
                if now >= deadline:
                    return
                if now - child.heard > (self._silence if child.spoke else max(self._silence, STARTUP)):
                    silent = round(now - child.heard, 1)
                    _log.warning("the probe process stopped answering; replacing it", extra={"silent_seconds": silent})
                    child.kill()
                    return
                self._cond.wait(min(_POLL, deadline - now))

    def _received(self, child: _Child, message: object) -> None:
        """Keep a result the current child sent; wake the waiting scan on anything (its death too)."""
        result = message[1] if isinstance(message, tuple) and message[0] == "result" else None
        if message is not None and message != ("alive",) and not isinstance(result, EndpointResult):
            _log.error("unexpected message from the probe process", extra={"type": type(message).__name__})
        with self._cond:
            if child is self._child and isinstance(result, EndpointResult):
                key = (result.endpoint, result.server_name)
                self._arrivals += 1
                self._fresh[key], self._arrived[key] = result, self._arrivals
            self._cond.notify_all()

    def _result(self, config: EndpointConfig, *, ended: bool) -> EndpointResult:
        """Publish what arrived for an endpoint since the last scan; or what was known, marked (under the lock)."""
        key = series_key(config)
        result = self._fresh.pop(key, None)
        if result is not None and result.error is EndpointReason.SCAN_FAILED and not result.addresses:
            result = self._down(config, EndpointReason.SCAN_FAILED, result.detail)  # a bug in the child's probe
        if result is None and ended:
            result = self._down(config, EndpointReason.SCAN_FAILED, "the probe process ended before answering")
        if result is None:
            result = overdue(key, self._last.get(key))
        self._last[key] = result
        return result

    def _down(self, config: EndpointConfig, reason: EndpointReason, detail: str) -> EndpointResult:
        """Down with ``reason``, on the addresses it last had (its series stay)."""
        endpoint, server_name = key = series_key(config)
        last = self._last.get(key)
        down = down_at((a.address for a in last.addresses) if last else (), reason, detail)
        return EndpointResult(endpoint=endpoint, server_name=server_name, addresses=down, error=reason, detail=detail)

    def _stop(self) -> None:
        child, self._child = self._child, None
        if child is not None and not child.end():
            self._dying.append(child)


def overdue(key: _Key, previous: EndpointResult | None) -> EndpointResult:
    """Mark an endpoint the scan had no result for by its deadline: down, its last addresses and chains kept."""
    reason = EndpointReason.SCAN_DEADLINE
    if previous is None or not previous.addresses:
        return EndpointResult(endpoint=key[0], server_name=key[1], error=reason, detail=DEADLINE_DETAIL)
    addresses = tuple(replace(a, error=reason, detail=DEADLINE_DETAIL) for a in previous.addresses)
    return replace(previous, addresses=addresses, error=None, detail="")
