"""Connection limits of the HTTP server: deadlines, a global cap with oldest-idle eviction, counted refusals.

Every connection is wrapped before aiohttp's protocol sees it, so the limits hold whatever the request does:
- a connection with no request in progress is closed after ``idle_timeout``;
- once the first byte of a request arrives its headers must be complete within ``header_timeout`` (a client that
  drips one byte a second gains nothing);
- past ``max_connections`` the connection idle for longest is closed to make room, so accept never stops;
- a TLS handshake not done within ``handshake_timeout`` is aborted by asyncio (and counted here).
Refusals are counted by reason (a metric) and summarised in the log at most once per ``log_every``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from gunicorn_cert_exporter.metrics.catalogue import BY_NAME

_log = logging.getLogger("gunicorn_cert_exporter.web")
REASONS = (
    "idle_timeout",
    "header_timeout",
    "tls_handshake",
    "connection_limit",
    "body_too_large",
    "auth_busy",
    "probe_busy",
    "busy",
)


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may hold of the server."""

    idle_timeout: float = 60.0
    header_timeout: float = 10.0
    handshake_timeout: float = 10.0
    response_timeout: float = 60.0  # reading a body and writing the answer, slow clients included
    max_connections: int = 4096
    max_body: int = 64 * 1024
    auth_checks: int = 2  # bcrypt checks at once; more wait for nobody: they get 429
    probes: int = 8  # /probe requests at once; more get 503
    log_every: float = 60.0


class Refusals(Collector):
    """Count refused or closed connections and requests by reason; summarise them in the log now and then."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals = dict.fromkeys(REASONS, 0)
        self._logged = dict.fromkeys(REASONS, 0)

    def add(self, reason: str) -> None:
        """Count one refusal."""
        with self._lock:
            self._totals[reason] += 1

    def collect(self) -> Iterable[Metric]:
        """Expose the totals."""
        spec = BY_NAME["gunicorn_cert_exporter_http_refused"]
        family = CounterMetricFamily(spec.name, spec.help, labels=list(spec.labels))
        with self._lock:
            for reason, count in self._totals.items():
                family.add_metric([reason], count)
        return [family]

    def summarise(self) -> None:
        """Log one line with the refusals since the last summary, if there were any."""
        with self._lock:
            new = {r: self._totals[r] - self._logged[r] for r in REASONS if self._totals[r] != self._logged[r]}
            self._logged = dict(self._totals)
        if new:
            _log.warning("connections or requests refused", extra={f"refused_{r}": n for r, n in new.items()})


class Guard:
    """Track every connection of a server; wrap the protocol factory aiohttp gives to asyncio."""

    def __init__(self, *, limits: Limits, refusals: Refusals) -> None:
        self.limits = limits
        self.refusals = refusals
        self._idle: OrderedDict[_Guarded, None] = OrderedDict()  # oldest idle first
        self._by_transport: dict[object, _Guarded] = {}
        self.open = 0

    def factory(self, inner: Callable[[], asyncio.Protocol], *, tls: bool) -> Callable[[], asyncio.Protocol]:
        """Return a protocol factory whose connections obey the limits."""
        return lambda: _Guarded(self, inner(), tls=tls)

    def request_started(self, transport: object) -> None:
        """Note that a connection's request headers are complete: its deadlines stop."""
        connection = self._by_transport.get(transport)
        if connection is not None:
            connection.busy()

    def request_finished(self, transport: object) -> None:
        """Note that a connection's response is written: it is idle again."""
        connection = self._by_transport.get(transport)
        if connection is not None:
            connection.idle()

    def _opened(self, connection: _Guarded) -> None:
        self.open += 1
        self._by_transport[connection.transport] = connection
        while self.open > self.limits.max_connections and self._idle:
            oldest = next(iter(self._idle))
            self.refusals.add("connection_limit")
            oldest.abort()

    def _closed(self, connection: _Guarded) -> None:
        self.open -= 1
        self._by_transport.pop(connection.transport, None)
        self._idle.pop(connection, None)


class _Guarded(asyncio.Protocol):
    """One connection: aiohttp's protocol inside, with this server's deadlines around it."""

    def __init__(self, guard: Guard, inner: asyncio.Protocol, *, tls: bool) -> None:
        self._guard, self._inner = guard, inner
        self.transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._started = False  # bytes of a request arrived since the connection went idle
        self._closed = False
        self._loop = asyncio.get_running_loop()
        if tls:  # asyncio aborts a slow handshake itself, before connection_made; count it here
            self._loop.call_later(guard.limits.handshake_timeout + 0.5, self._handshake_done)

    def _handshake_done(self) -> None:
        if self.transport is None:
            self._guard.refusals.add("tls_handshake")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register, make room if the server is full, and start the idle deadline."""
        self.transport = transport
        self._guard._opened(self)
        self._inner.connection_made(transport)
        self.idle()

    def data_received(self, data: bytes) -> None:
        """Start the header deadline at a request's first byte."""
        if not self._started and self._timer is not None:
            self._started = True
            self._guard._idle.pop(self, None)
            self._arm(self._guard.limits.header_timeout, "header_timeout")
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        """Pass the end of the client's stream on."""
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        """Pass flow control on."""
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        """Pass flow control on."""
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        """Unregister and stop the deadlines."""
        self._closed = True
        self._cancel()
        self._guard._closed(self)
        self._inner.connection_lost(exc)

    def busy(self) -> None:
        """Stop the deadlines while a request is being answered."""
        self._cancel()
        self._guard._idle.pop(self, None)

    def idle(self) -> None:
        """Start the idle deadline; become the newest candidate for eviction."""
        if self._closed:
            return
        self._started = False
        self._guard._idle[self] = None
        self._guard._idle.move_to_end(self)
        self._arm(self._guard.limits.idle_timeout, "idle_timeout")

    def abort(self) -> None:
        """Close at once, without waiting for buffers to drain."""
        self._guard._idle.pop(self, None)
        if self.transport is not None and not self._closed:
            self.transport.abort()  # type: ignore[attr-defined]

    def _arm(self, seconds: float, reason: str) -> None:
        self._cancel()
        self._timer = self._loop.call_later(seconds, self._expire, reason)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, reason: str) -> None:
        self._timer = None
        self._guard.refusals.add(reason)
        self.abort()
