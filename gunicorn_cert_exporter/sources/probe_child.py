"""The probe process itself: probe the endpoints it is asked for and send back each result as it completes.

Started by ``probe_process.ProbeProcess`` as ``python -m gunicorn_cert_exporter.sources.probe_child FD LEVEL FORMAT``.
A request names the endpoints of one scan; one already waiting or being probed is not queued twice, so what the last
scan did not reach goes first in the next. At most ``concurrency`` probes start together; a probe that has waited
``PATIENCE`` on its peer steps aside (its thread waits out its own timeout), so endpoints that accept and never answer
cost their timeouts without holding back the healthy ones; at most ``LINGER`` times ``concurrency`` probes run in
all. Every ``HEARTBEAT`` it says it is alive: the exporter tells a slow fleet from a stuck process by that.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection

from gunicorn_cert_exporter import logs
from gunicorn_cert_exporter.config import EndpointConfig
from gunicorn_cert_exporter.model import EndpointReason, EndpointResult
from gunicorn_cert_exporter.sources.endpoints import Prober, series_key

PATIENCE = 0.5
"""Seconds a probe counts against ``concurrency`` (a tenth of its timeout if less); a healthy handshake ends sooner."""
LINGER = 8
"""Probes waiting on silent peers, as a multiple of ``concurrency``: what bounds the threads and sockets."""
HEARTBEAT = 1.0
"""Seconds between two 'alive' messages."""

_log = logging.getLogger("gunicorn_cert_exporter.endpoints")


class Worker:
    """Queue the endpoints asked for, probe them within the limits, and stream each result back."""

    def __init__(self, connection: Connection, prober: Prober) -> None:
        self._connection = connection
        self._prober = prober
        self._sending = threading.Lock()
        self._cond = threading.Condition()
        self._queue: deque[EndpointConfig] = deque()
        self._pending: set[EndpointConfig] = set()  # queued or being probed
        self._running: dict[int, float] = {}  # probe -> until when it counts against concurrency
        self._ids = itertools.count()
        self._concurrency = 1

    def ask(
        self, configs: Sequence[EndpointConfig], concurrency: int, known: Mapping[tuple[str, str], tuple[str, ...]]
    ) -> None:
        """Queue the endpoints of one scan behind those still waiting from the last one."""
        # The endpoints of the config in force: the addresses they resolved to are kept. A new child also learns
        # where they were from the exporter, so a name that stops resolving keeps its series across children.
        self._prober.track(configs, known=known)
        with self._cond:
            self._concurrency = concurrency
            for config in configs:
                if config not in self._pending:
                    self._pending.add(config)
                    self._queue.append(config)
            self._cond.notify_all()

    def send(self, message: object) -> bool:
        """Send one message (any thread may); False once the exporter's end is closed."""
        try:
            with self._sending:
                self._connection.send(message)
        except (OSError, ValueError):
            return False
        return True

    def beat(self) -> None:
        """Say 'alive' every ``HEARTBEAT`` until the exporter's end closes."""
        while self.send(("alive",)):
            time.sleep(HEARTBEAT)

    def dispatch(self) -> None:
        """Start each queued probe in a thread of its own as soon as the limits allow; runs for the process's life."""
        while True:
            with self._cond:
                while (wait := self._wait()) != 0.0:
                    self._cond.wait(wait)
                config = self._queue.popleft()
                ident = next(self._ids)
                self._running[ident] = time.monotonic() + min(PATIENCE, config.timeout / 10)
            threading.Thread(target=self._probe, args=(ident, config), name="probe", daemon=True).start()

    def _wait(self) -> float | None:
        """Return 0.0 if a probe may start now, else how long to wait before looking again (None: until told)."""
        if not self._queue or len(self._running) >= self._concurrency * LINGER:
            return None
        now = time.monotonic()
        young = [until for until in self._running.values() if until > now]
        if len(young) < self._concurrency:
            return 0.0
        return max(min(young) - now, 0.001)

    def _probe(self, ident: int, config: EndpointConfig) -> None:
        try:
            result = self._prober.probe(config)
        except Exception as exc:  # noqa: BLE001  (a bug: logged with its traceback; the exporter keeps the addresses)
            _log.exception("endpoint probe failed in the probe process", extra={"endpoint": config.address})
            endpoint, server_name = series_key(config)
            detail = f"the probe process failed: {type(exc).__name__}"
            result = EndpointResult(
                endpoint=endpoint, server_name=server_name, error=EndpointReason.SCAN_FAILED, detail=detail
            )
        finally:
            with self._cond:
                del self._running[ident]
                self._pending.discard(config)
                self._cond.notify_all()
        self.send(("result", result))


def _orphaned(parent: int) -> None:
    """Exit as soon as the exporter is gone, even in the middle of a scan (its probes may run for a while)."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)


def _or_exit(run: Callable[[], None]) -> None:
    """Run one of the process's own threads; if it raises (a bug), exit: the exporter starts a new process."""
    try:
        run()
    except Exception:  # noqa: BLE001  (logged with its traceback; a process that can't probe must not linger)
        _log.exception("a thread of the probe process failed; the process exits")
        os._exit(1)


def serve(connection: Connection) -> None:
    """Take requests until the exporter's end of the socket closes."""
    worker = Worker(connection, Prober())
    threading.Thread(target=_or_exit, args=(worker.dispatch,), name="dispatch", daemon=True).start()
    threading.Thread(target=_or_exit, args=(worker.beat,), name="heartbeat", daemon=True).start()
    while True:
        try:
            configs, concurrency, known = connection.recv()
        except (EOFError, OSError):
            return
        except Exception:  # noqa: BLE001  (a request this side can't read is a bug: logged, the next one is read)
            _log.exception("the probe process could not read a request")
            continue
        worker.ask(configs, concurrency, known)


def main(argv: Sequence[str]) -> None:
    """Run as the child: ``python -m gunicorn_cert_exporter.sources.probe_child FD LEVEL FORMAT``."""
    # ^C, a hang-up or systemd's SIGTERM to the whole group are the exporter's to handle; it ends this process.
    for number in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    logs.setup(level=argv[1], fmt=argv[2])  # its logs and warnings read like the exporter's (logfmt or JSON)
    threading.Thread(target=_orphaned, args=(os.getppid(),), name="parent-watch", daemon=True).start()
    serve(Connection(int(argv[0])))
    os._exit(0)  # probes still waiting on silent peers are daemon threads: nothing to wait for


if __name__ == "__main__":
    main(sys.argv[1:])
