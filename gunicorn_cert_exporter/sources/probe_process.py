"""The endpoints scan in a child process: its handshakes never hold the GIL the HTTP server needs.

The exporter's event loop shares one interpreter with the scans. Each probe runs Python between its system calls
(socket set-up, the served chain's facts), and with hundreds of endpoints, ``scan.concurrency`` probe threads
take the GIL in turn for the length of every endpoints scan: a scrape then waits behind them after each of its own
system calls. Here a child process runs ``Prober.probe_all`` for each scan and sends back the results (frozen
values). The Gunicorn targets scan and ``/probe`` keep their probes in the exporter: they are few.

One scan at a time talks to the child. A scan that finds the child still busy with an older scan (stuck past its
deadline, which the scheduler abandoned) kills it and starts a new one. If the child dies mid-scan, that scan's
endpoints are reported down with ``scan_failed`` on the addresses they last had, so no series disappears. The
child exits when the exporter does: its end of the pipe closes.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection

from gunicorn_cert_exporter import logs
from gunicorn_cert_exporter.config import EndpointConfig
from gunicorn_cert_exporter.model import AddressResult, EndpointReason, EndpointResult
from gunicorn_cert_exporter.sources.endpoints import Prober

_log = logging.getLogger("gunicorn_cert_exporter.endpoints")
_POLL = 0.5  # how often a waiting scan looks whether its child is still alive


def _serve(connection: Connection) -> None:
    """The child: probe each batch of endpoints sent, until the exporter's end of the pipe closes."""
    prober = Prober()
    while True:
        try:
            configs, concurrency = connection.recv()
        except (EOFError, OSError):
            return
        prober.track(configs)  # the endpoints of the config in force: the addresses they resolved to are kept
        try:
            answer: tuple[EndpointResult, ...] | str = prober.probe_all(configs, concurrency=concurrency)
        except Exception as exc:  # noqa: BLE001  (a bug: reported to the exporter, which marks the endpoints)
            answer = f"the probe process failed: {type(exc).__name__}"
        try:
            connection.send(answer)
        except (OSError, ValueError):
            return


def main(argv: Sequence[str]) -> None:
    """Run as the child: ``python -m gunicorn_cert_exporter.sources.probe_process FD LEVEL FORMAT``."""
    for number in (signal.SIGINT, signal.SIGHUP):  # a terminal's ^C or hang-up is the exporter's to handle
        signal.signal(number, signal.SIG_IGN)
    logs.setup(level=argv[1], fmt=argv[2])  # its warnings read like the exporter's (logfmt or JSON)
    _serve(Connection(int(argv[0])))


class _Child:
    def __init__(self, log: tuple[str, str]) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            fd = theirs.fileno()
            command = [sys.executable, "-m", __name__, str(fd), *log]
            self.process = subprocess.Popen(command, pass_fds=(fd,), stdin=subprocess.DEVNULL)
        self.connection = Connection(ours.detach())

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        self.connection.close()


def _exchange(child: _Child, request: object) -> object | None:
    """Send one request and wait for its answer; None if the child died or was killed meanwhile."""
    try:
        child.connection.send(request)
        while not child.connection.poll(_POLL):
            if not child.alive():
                return None
        answer: object = child.connection.recv()
    except (EOFError, OSError, ValueError):
        return None
    return answer


class ProbeProcess:
    """Probe endpoints in a child process, started at the first scan and replaced when it dies or gets stuck."""

    def __init__(self, *, log: tuple[str, str] = ("info", "logfmt")) -> None:
        """``log``: the exporter's log level and format, for the child's own warnings."""
        self._log_setup = log
        self._lock = threading.Lock()  # held by the scan talking to the child
        self._child: _Child | None = None
        self._known: dict[tuple[str, str], tuple[str, ...]] = {}  # addresses each endpoint last had
        self._closed = False

    @property
    def pid(self) -> int | None:
        """Return the child's pid, if one runs."""
        child = self._child
        return child.process.pid if child is not None and child.alive() else None

    def probe_all(self, configs: Sequence[EndpointConfig], *, concurrency: int) -> tuple[EndpointResult, ...]:
        """Probe every endpoint in the child; if it dies, every endpoint is down with ``scan_failed``."""
        if not configs:
            return ()
        if not self._lock.acquire(blocking=False):
            # An older scan still waits on the child: it overran and was abandoned. Its child is stuck: kill it, and
            # the older scan gets its answer (scan_failed) and lets go.
            stuck = self._child
            if stuck is not None:
                _log.warning("the probe process was still busy with an earlier scan; restarting it")
                stuck.kill()
            if not self._lock.acquire(timeout=10):
                return self._failed(configs, "the probe process is busy")
        try:
            return self._ask(list(configs), concurrency)
        finally:
            self._lock.release()

    def _ask(self, configs: list[EndpointConfig], concurrency: int) -> tuple[EndpointResult, ...]:
        child = self._child
        if child is None or not child.alive() or child.connection.closed:
            if self._closed:
                return self._failed(configs, "the exporter is stopping")
            child = self._child = _Child(self._log_setup)
        answer = _exchange(child, (configs, concurrency))
        if answer is None:
            child.kill()
            _log.warning("the probe process ended before answering", extra={"exitcode": child.process.returncode})
            return self._failed(configs, "the probe process ended before answering")
        if not isinstance(answer, tuple):
            return self._failed(configs, str(answer))
        results: tuple[EndpointResult, ...] = answer
        self._known = {(r.endpoint, r.server_name): tuple(a.address for a in r.addresses) for r in results}
        return results

    def _failed(self, configs: Sequence[EndpointConfig], detail: str) -> tuple[EndpointResult, ...]:
        """Every endpoint down with ``scan_failed``, on the addresses it last had (its series stay)."""
        reason = EndpointReason.SCAN_FAILED
        out = []
        for config in configs:
            key = (config.address, config.sni or "")
            down = tuple(AddressResult(address=a, error=reason, detail=detail) for a in self._known.get(key, ()))
            out.append(EndpointResult(endpoint=key[0], server_name=key[1], addresses=down, error=reason, detail=detail))
        return tuple(out)

    def close(self) -> None:
        """Stop the child; a scan still waiting on it gets ``scan_failed``."""
        self._closed = True
        child = self._child
        if child is not None:
            child.connection.close()  # the child sees the end of the pipe and exits
            try:
                child.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                child.kill()


if __name__ == "__main__":
    main(sys.argv[1:])
