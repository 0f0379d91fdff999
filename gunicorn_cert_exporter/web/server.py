"""HTTP on aiohttp: /metrics, /probe, /healthz, /-/reload and the status page, behind optional TLS and basic auth.

The server runs its own event loop in one thread; scans run on the scheduler's threads. Nothing slow happens on
the loop: bcrypt, probes, reloads and the status page run in bounded executors, and /metrics only joins bytes that
the scans rendered when they published (metrics.render_cache).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from gunicorn_cert_exporter import status as host_status
from gunicorn_cert_exporter.bands import Thresholds
from gunicorn_cert_exporter.escapes import strict_json
from gunicorn_cert_exporter.metrics.render_cache import RenderCache, format_for
from gunicorn_cert_exporter.model import Snapshot
from gunicorn_cert_exporter.service import ProbeOutcome, ProbeRefusal, Service
from gunicorn_cert_exporter.web import status_page
from gunicorn_cert_exporter.web.connections import Guard, Limits, Refusals
from gunicorn_cert_exporter.web.webconfig import BasicAuth, ReloadingContext

_log = logging.getLogger("gunicorn_cert_exporter.web")
_WRITE_SLICE = 1 << 20  # a slow reader holds at most about this much of a body in its transport's buffer
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class App:
    """What the HTTP layer serves; everything it may call, injected."""

    exposition: RenderCache
    snapshot: Callable[[], Snapshot]
    probe: Callable[[list[str], list[str]], ProbeOutcome]
    reload: Callable[[], list[str]]
    refusals: Refusals = field(default_factory=Refusals)
    clock: Callable[[], float] = time.time
    thresholds: Callable[[], Thresholds] = Thresholds  # the config's bands, as the page and the API judge


_REFUSAL_STATUS = {ProbeRefusal.MALFORMED: 400, ProbeRefusal.NOT_ALLOWED: 403}


def app_for(service: Service, *, live: CollectorRegistry | None = None) -> App:
    """Serve a service: /metrics from its snapshot (plus ``live`` series such as process and GC), /probe, reload."""
    refusals = Refusals()
    exposition = RenderCache(snapshot=service.snapshot, live=[live or CollectorRegistry(), refusals])
    service.subscribe(exposition.publish)  # each scan renders its own part on its own thread, as it publishes
    exposition.publish(service.snapshot())
    return App(
        exposition=exposition,
        snapshot=service.snapshot,
        probe=service.probe,
        reload=service.reload,
        refusals=refusals,
        thresholds=lambda: service.config.bands.thresholds,
    )


def gzip_wanted(accept_encoding: str) -> bool:
    """Tell whether the client takes gzip, honouring q-values (``gzip;q=0`` means no).

    prometheus_client's ``gzip_accepted`` ignores q-values, so it can't be used here.
    """
    best: float | None = None
    for item in accept_encoding.split(","):
        coding, *params = (p.strip() for p in item.split(";"))
        if coding.lower() not in ("gzip", "*"):
            continue
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if coding.lower() == "gzip" or best is None:
            best = quality
    return best is not None and best > 0


class _AccessLog(AbstractAccessLogger):
    """Log requests at debug level, in the exporter's log format (the query would show probe targets: left out)."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        """Log one request."""
        self.logger.debug(
            "request",
            extra={
                "client": request.remote,
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "duration_seconds": round(time, 4),
            },
        )

    @property
    def enabled(self) -> bool:
        """Tell aiohttp whether to time requests at all."""
        return _log.isEnabledFor(logging.DEBUG)


class _Routes:
    """The handlers, with the bounded executors they use."""

    def __init__(self, app: App, *, auth: BasicAuth, guard: Guard) -> None:
        self.app, self.auth, self.guard, self.limits = app, auth, guard, guard.limits
        self._bcrypt = ThreadPoolExecutor(self.limits.auth_checks, thread_name_prefix="bcrypt")
        self._probes = ThreadPoolExecutor(self.limits.probes, thread_name_prefix="probe")
        self._work = ThreadPoolExecutor(2, thread_name_prefix="web")  # the status page and reloads
        self._metrics = ThreadPoolExecutor(2, thread_name_prefix="metrics")  # never queued behind the page
        self._busy = {"auth": 0, "probe": 0, "work": 0}
        self._reloading = asyncio.Lock()

    def table(self) -> list[web.AbstractRouteDef]:
        """Return the route table (GET routes answer HEAD too)."""
        return [
            web.get("/metrics", self.metrics),
            web.get("/probe", self.probe),
            web.get("/healthz", self.healthz),
            web.get("/", self.status),
            web.get("/api/v1/status", self.status_json),
            web.post("/-/reload", self.reload),
        ]

    def close(self) -> None:
        """Stop the executors."""
        for pool in (self._bcrypt, self._probes, self._work, self._metrics):
            pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, pool: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn)

    def _full(self, kind: str, limit: int) -> bool:
        return self._busy[kind] >= limit

    async def _bounded(self, kind: str, pool: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        """Run ``fn`` in ``pool``, holding a slot until the work ends (not when a disconnected client gives up)."""
        self._busy[kind] += 1
        future = asyncio.get_running_loop().run_in_executor(pool, fn)

        def release(_: object) -> None:
            self._busy[kind] -= 1

        future.add_done_callback(release)
        return await asyncio.shield(future)  # a cancelled handler must not mark the running work as done

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Stop the connection's deadlines, check credentials, bound the answer's time, set common headers."""
        transport = request.transport
        self.guard.request_started(transport)
        # A client that reads (or sends) too slowly loses its connection; a timer is cheaper than a task per request.
        deadline = None
        if transport is not None:
            deadline = asyncio.get_running_loop().call_later(self.limits.response_timeout, transport.abort)
        try:
            return await self._answer(request, handler)
        finally:
            if deadline is not None:
                deadline.cancel()
            self.guard.request_finished(transport)

    async def _answer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await self._authorize(request) or await handler(request)
        if not response.prepared:
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    async def _authorize(self, request: web.Request) -> web.Response | None:
        if not self.auth.enabled:
            return None
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        user = password = ""
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user = password = ""
        if self.auth.remembered(user, password):
            return None
        if self._full("auth", self.limits.auth_checks):  # bcrypt is slow on purpose: never queue it unboundedly
            self.app.refusals.add("auth_busy")
            return web.Response(status=429, text="too many authentication attempts\n", headers={"Retry-After": "1"})
        ok = await self._bounded("auth", self._bcrypt, lambda: self.auth.check(user, password))
        if ok:
            return None
        return web.Response(status=401, text="unauthorized\n", headers={"WWW-Authenticate": 'Basic realm="exporter"'})

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        """Serve the ready bytes of the last snapshot, plus the live series."""
        fmt, content_type = format_for(request.headers.get("Accept", ""))
        gzipped = gzip_wanted(request.headers.get("Accept-Encoding", ""))
        exposition = self.app.exposition
        if exposition.live_is_fresh(fmt):  # only joins ready bytes: no thread hop
            pieces = exposition.body(fmt, gzipped=gzipped)
        else:  # runs the live collectors (they read /proc): off the loop
            pieces = await self._run(self._metrics, lambda: exposition.body(fmt, gzipped=gzipped))
        response = web.StreamResponse(
            headers={
                "Content-Type": content_type,
                "Vary": "Accept, Accept-Encoding",
                "X-Content-Type-Options": "nosniff",
            }
        )
        if gzipped:
            response.headers["Content-Encoding"] = "gzip"
        response.content_length = sum(len(p) for p in pieces)
        await response.prepare(request)
        if request.method != "HEAD":
            for piece in pieces:
                view = memoryview(piece)
                for start in range(0, len(view), _WRITE_SLICE):
                    await response.write(view[start : start + _WRITE_SLICE])
        await response.write_eof()
        return response

    async def probe(self, request: web.Request) -> web.Response:
        """Probe one allowed target, with a bounded number of probes at once."""
        if self._full("probe", self.limits.probes):
            self.app.refusals.add("probe_busy")
            return web.Response(status=503, text="too many probes at once\n", headers={"Retry-After": "1"})
        targets, names = request.query.getall("target", []), request.query.getall("server_name", [])
        outcome = await self._bounded("probe", self._probes, lambda: self.app.probe(list(targets), list(names)))
        if outcome.registry is None:
            status = _REFUSAL_STATUS[outcome.refusal or ProbeRefusal.MALFORMED]
            return web.Response(status=status, text=outcome.message + "\n")
        registry = outcome.registry
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = await self._run(self._metrics, lambda: encoder(registry))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(self, _request: web.Request) -> web.Response:
        """Say the server answers."""
        return web.Response(text="ok\n")

    def _too_busy(self) -> web.Response | None:
        if not self._full("work", 2):
            return None
        self.app.refusals.add("busy")
        return web.Response(status=503, text="busy\n", headers={"Retry-After": "1"})

    async def status(self, request: web.Request) -> web.Response:
        """Render the HTML status page off the loop, two at a time at most; ``?q=`` filters it without JavaScript."""
        if refused := self._too_busy():
            return refused
        app, wanted = self.app, request.query.get("q", "")

        def render() -> bytes:
            page = status_page.render(app.snapshot(), now=app.clock(), query=wanted, thresholds=app.thresholds())
            # File names may hold bytes that are not UTF-8 (surrogates here): show them escaped, never fail.
            return page.encode("utf-8", "backslashreplace")

        body = await self._bounded("work", self._work, render)
        return web.Response(body=body, headers={"Content-Type": "text/html; charset=utf-8"})

    async def status_json(self, _request: web.Request) -> web.Response:
        """Serve the status page's content as JSON (docs/status-api.md), built off the loop like the page."""
        if refused := self._too_busy():
            return refused
        app = self.app

        def render() -> bytes:
            view = host_status.build(app.snapshot(), now=app.clock(), thresholds=app.thresholds())
            # Strict JSON (null for NaN and infinities), control characters escaped; names may hold non-UTF-8 bytes.
            body = strict_json(host_status.document(view), indent=1) + "\n"
            return body.encode("utf-8", "backslashreplace")

        body = await self._bounded("work", self._work, render)
        return web.Response(body=body, headers={"Content-Type": "application/json; charset=utf-8"})

    async def reload(self, request: web.Request) -> web.Response:
        """Reload the config; the body is read (bounded) so it can never be taken for another request."""
        if request.content_length is not None and request.content_length > self.limits.max_body:
            self.app.refusals.add("body_too_large")
            return web.Response(status=413, text="request body too large\n", headers={"Connection": "close"})
        try:
            await request.read()
        except web.HTTPRequestEntityTooLarge:
            self.app.refusals.add("body_too_large")
            return web.Response(status=413, text="request body too large\n", headers={"Connection": "close"})
        if refused := self._too_busy():
            return refused
        async with self._reloading:
            problems = await self._bounded("work", self._work, self.app.reload)
        if problems:
            return web.Response(status=500, text="\n".join(problems) + "\n")
        return web.Response(text="reloaded\n")


def _listener(address: str) -> socket.socket:
    """Bind ``host:port``; an empty host means every address, IPv6 and IPv4."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    candidates = [(host, socket.AF_INET6 if ":" in host else socket.AF_INET)]
    if not host:
        candidates = [("::", socket.AF_INET6), ("0.0.0.0", socket.AF_INET)]  # noqa: S104  (":port" means all)
    error = OSError(f"no address to bind for {address}")
    for bind_host, family in candidates:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and not host:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((bind_host, int(port)))
            sock.listen(1024)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error


def _outer_context(tls: ReloadingContext) -> ssl.SSLContext:
    """A context whose SNI callback hands each handshake the current context: renewed files serve at once."""
    outer = tls.fresh()

    def choose(sock: ssl.SSLObject, _name: str | None, _context: ssl.SSLContext) -> None:
        sock.context = tls.current()

    outer.sni_callback = choose
    return outer


class WebServer:
    """The HTTP server: its own thread and event loop; ``start()`` binds and serves, ``stop()`` ends it."""

    def __init__(
        self,
        app: App,
        *,
        addresses: list[str],
        auth: BasicAuth,
        tls: ReloadingContext | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.app, self.auth, self.tls = app, auth, tls
        self.limits = limits or Limits()
        self._sockets = [_listener(address) for address in addresses]  # fail here, in the caller, on a bad address
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="http", daemon=True)
        self._stopped: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._routes: _Routes | None = None
        self._summary: asyncio.Task[None] | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self.guard = Guard(limits=self.limits, refusals=app.refusals)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Return the bound (host, port) of each listener."""
        return [(str(s.getsockname()[0]), int(s.getsockname()[1])) for s in self._sockets]

    def start(self) -> None:
        """Serve in the background until ``stop()``."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=30)

    async def _serve(self) -> None:
        self._routes = _Routes(self.app, auth=self.auth, guard=self.guard)
        application = web.Application(middlewares=[self._routes.middleware], client_max_size=self.limits.max_body)
        application.add_routes(self._routes.table())
        runner = web.AppRunner(
            application,
            access_log_class=_AccessLog,
            access_log=_log,
            keepalive_timeout=self.limits.idle_timeout + 5,  # the guard's deadlines come first; this is a backstop
            lingering_time=self.limits.header_timeout,
            max_line_size=8190,
            max_field_size=8190,
            handler_cancellation=True,
            shutdown_timeout=2.0,  # SIGTERM must end the process within 5 s, whatever a client is doing
        )
        await runner.setup()
        self._runner = runner
        if runner.server is None:
            raise RuntimeError("aiohttp runner set up without a server")
        ssl_context = _outer_context(self.tls) if self.tls is not None else None
        protocol = self.guard.factory(runner.server, tls=ssl_context is not None)
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            server = await loop.create_server(
                protocol,
                sock=sock,
                ssl=ssl_context,
                ssl_handshake_timeout=self.limits.handshake_timeout if ssl_context else None,
                backlog=1024,
            )
            self._servers.append(server)
        self._summary = loop.create_task(self._summarise())

    async def _summarise(self) -> None:
        while True:
            await asyncio.sleep(self.limits.log_every)
            self.app.refusals.summarise()

    def stop(self) -> None:
        """Stop serving and end the thread."""
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=3)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        for sock in self._sockets:
            sock.close()
        if self._routes is not None:
            self._routes.close()

    async def _shutdown(self) -> None:
        self.app.refusals.summarise()
        for server in self._servers:
            server.close()
        if self._runner is not None:
            await self._runner.cleanup()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()


def serve_in_background(app: App, *, addresses: list[str], auth: BasicAuth, **options: Any) -> WebServer:  # noqa: ANN401
    """Start a WebServer and return it."""
    server = WebServer(app, addresses=addresses, auth=auth, **options)
    server.start()
    return server
