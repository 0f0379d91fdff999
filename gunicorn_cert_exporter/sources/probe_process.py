"""The endpoints scan in a child process: its handshakes never hold the GIL the HTTP server needs.

The exporter's event loop shares one interpreter with the scans. Each probe runs Python between its system calls
(socket set-up, the served chain's facts), and with hundreds of endpoints, ``scan.concurrency`` probe threads
take the GIL in turn for the length of every endpoints scan: a scrape then waits behind them after each of its own
system calls. Here a child process runs ``Prober.probe_all`` for each scan and sends back the results (frozen
values). The Gunicorn targets scan and ``/probe`` keep their probes in the exporter: they are few.

One scan at a time talks to the child; a later scan (after a config reload) waits for it. Only that scan closes
the child's socket. When the scheduler abandons a scan stuck past its deadline, ``abandon()`` kills the child,
the stuck scan gets ``scan_failed`` and lets go, and the next scan starts a new child. If the child dies mid-scan,
that scan's endpoints are reported down with ``scan_failed`` on the addresses they last had, so no series
disappears. The child exits when the exporter does, however it ends: its end of the socket closes, and it watches
its parent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection

from gunicorn_cert_exporter import logs
from gunicorn_cert_exporter.config import EndpointConfig
from gunicorn_cert_exporter.model import EndpointReason, EndpointResult, down_at
from gunicorn_cert_exporter.sources.endpoints import Prober

_log = logging.getLogger("gunicorn_cert_exporter.endpoints")
_POLL = 0.5  # how often a waiting scan looks whether its child is still alive
_MAX_DYING = 3  # killed children that have not exited yet (stuck in the kernel): no new one past this
_KILL_GRACE = 5.0  # how long a scan waits on a killed child before it gives up on it


def _serve(connection: Connection) -> None:
    """The child: probe each batch of endpoints sent, until the exporter's end of the socket closes."""
    prober = Prober()
    while True:
        try:
            configs, concurrency, known = connection.recv()
        except (EOFError, OSError):
            return
        # The endpoints of the config in force: the addresses they resolved to are kept. A new child also learns
        # where they were from the exporter, so a name that stops resolving keeps its series across children.
        prober.track(configs, known=known)
        try:
            answer: tuple[EndpointResult, ...] | str = prober.probe_all(configs, concurrency=concurrency)
        except Exception as exc:  # noqa: BLE001  (a bug: logged here with its traceback; the exporter marks the endpoints)
            _log.exception("endpoints scan failed in the probe process")
            answer = f"the probe process failed: {type(exc).__name__}"
        try:
            connection.send(answer)
        except (OSError, ValueError):
            return


def _orphaned(parent: int) -> None:
    """Exit as soon as the exporter is gone, even in the middle of a scan (its probes may run for a while)."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)


def main(argv: Sequence[str]) -> None:
    """Run as the child: ``python -m gunicorn_cert_exporter.sources.probe_process FD LEVEL FORMAT``."""
    # ^C, a hang-up or systemd's SIGTERM to the whole group are the exporter's to handle; it ends this process.
    for number in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    logs.setup(level=argv[1], fmt=argv[2])  # its logs and warnings read like the exporter's (logfmt or JSON)
    threading.Thread(target=_orphaned, args=(os.getppid(),), name="parent-watch", daemon=True).start()
    _serve(Connection(int(argv[0])))


class _Child:
    def __init__(self, log: tuple[str, str]) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            fd = theirs.fileno()
            command = [sys.executable, "-m", __name__, str(fd), *log]
            self.process = subprocess.Popen(command, pass_fds=(fd,), stdin=subprocess.DEVNULL)
        self.connection = Connection(ours.detach())
        self.killed_at: float | None = None
        threading.Thread(target=self._reap, name="probe-reaper", daemon=True).start()

    def _reap(self) -> None:
        """Reap the child as soon as it exits, between scans too: a killed child is no zombie until the next scan."""
        with contextlib.suppress(ChildProcessError):  # already reaped by a scan
            os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOWAIT)  # waits without reaping: Popen reaps
        self.process.poll()  # reaps and sets returncode; if a scan holds Popen's lock, that scan reaps it

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """Send SIGKILL (any thread may); the scan talking to it notices and closes its socket."""
        if self.killed_at is None:
            self.killed_at = time.monotonic()
        if self.alive():
            self.process.kill()

    def end(self) -> bool:
        """Kill it and close its socket (only the scan talking to it may); tell whether it has exited."""
        self.kill()
        self.connection.close()
        try:
            self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return False  # stuck in the kernel (a hung mount): SIGKILL takes effect when the call returns
        return True


def _exchange(child: _Child, request: object) -> object | None:
    """Send one request and wait for its answer; None if the child died, was killed, or answered garbage."""
    try:
        child.connection.send(request)
        while not child.connection.poll(_POLL):
            if not child.alive():
                return None
            if child.killed_at is not None and time.monotonic() - child.killed_at > _KILL_GRACE:
                return None  # killed but stuck in the kernel (a hung mount): give up on it, it is counted dying
        answer: object = child.connection.recv()
    except Exception:  # noqa: BLE001  (EOF, a reset socket, an unpicklable answer: the child is replaced)
        return None
    return answer


class ProbeProcess:
    """Probe endpoints in a child process, started at the first scan and replaced when it dies or gets stuck."""

    def __init__(self, *, log: tuple[str, str] = ("info", "logfmt")) -> None:
        """``log``: the exporter's log level and format, for the child's own logs."""
        self._log_setup = log
        self._lock = threading.Lock()  # held by the scan talking to the child
        self._child: _Child | None = None
        self._dying: list[_Child] = []
        self._known: dict[tuple[str, str], tuple[str, ...]] = {}  # the addresses each endpoint last had
        self._closed = False

    @property
    def pid(self) -> int | None:
        """Return the child's pid, if one runs."""
        child = self._child
        return child.process.pid if child is not None and child.alive() else None

    def probe_all(self, configs: Sequence[EndpointConfig], *, concurrency: int) -> tuple[EndpointResult, ...]:
        """Probe every endpoint in the child; if it dies, every endpoint is down with ``scan_failed``."""
        with self._lock:  # an earlier scan ends within its probes' timeouts, or is abandoned (which kills its child)
            if not configs:
                self._stop()  # no endpoints left in the config: no idle process
                return ()
            return self._ask(list(configs), concurrency)

    def abandon(self) -> None:
        """Give up on the scan waiting on the child (the scheduler abandoned it): kill the child, so it lets go."""
        child = self._child
        if child is not None and self._lock.locked():
            _log.warning("the endpoints scan overran its deadline; restarting the probe process")
            child.kill()  # the scan waiting on it sees it die, closes its socket and reports scan_failed

    def close(self) -> None:
        """Stop the child (it holds nothing worth a graceful stop); a scan waiting on it gets ``scan_failed``."""
        self._closed = True
        child = self._child
        if child is None:
            return
        child.kill()
        if self._lock.acquire(timeout=1):  # no scan waiting on it: close its socket here
            try:
                self._stop()
            finally:
                self._lock.release()

    def _stop(self) -> None:
        child, self._child = self._child, None
        if child is not None and not child.end():
            self._dying.append(child)

    def _ask(self, configs: list[EndpointConfig], concurrency: int) -> tuple[EndpointResult, ...]:
        child = self._child
        if child is None or not child.alive():
            self._stop()
            self._dying = [c for c in self._dying if c.alive()]
            if self._closed:
                return self._failed(configs, "the exporter is stopping")
            if len(self._dying) >= _MAX_DYING:
                return self._failed(configs, "earlier probe processes did not exit")
            child = self._child = _Child(self._log_setup)
        answer = _exchange(child, (configs, concurrency, self._known))
        if answer is None:
            self._stop()
            _log.warning("the probe process ended before answering", extra={"exitcode": child.process.returncode})
            return self._failed(configs, "the probe process ended before answering")
        if not isinstance(answer, tuple):
            _log.warning("endpoints scan failed", extra={"detail": str(answer)})
            return self._failed(configs, str(answer))
        self._known = {(r.endpoint, r.server_name): tuple(a.address for a in r.addresses) for r in answer}
        return answer

    def _failed(self, configs: Sequence[EndpointConfig], detail: str) -> tuple[EndpointResult, ...]:
        """Every endpoint down with ``scan_failed``, on the addresses it last had (its series stay)."""
        reason = EndpointReason.SCAN_FAILED
        out = []
        for config in configs:
            key = (config.address, config.sni or "")
            down = down_at(self._known.get(key, ()), reason, detail)
            out.append(EndpointResult(endpoint=key[0], server_name=key[1], addresses=down, error=reason, detail=detail))
        return tuple(out)


if __name__ == "__main__":
    main(sys.argv[1:])
