"""The HTTP server's lifecycle: bind the listeners, serve the routes on aiohttp in a thread of its own, stop.

The server runs its own event loop in one thread (``WebServer.start()`` / ``stop()``); scans run on their own
threads. TLS listeners pick each handshake's context through an SNI callback, so a renewed certificate serves at
once. The routes and their limits are in web.routes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from gunicorn_cert_exporter.web.connections import Guard, Limits
from gunicorn_cert_exporter.web.routes import App, Routes
from gunicorn_cert_exporter.web.webconfig import BasicAuth, ReloadingContext

_log = logging.getLogger("gunicorn_cert_exporter.web")


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
        self._runner: web.AppRunner | None = None
        self._routes: Routes | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._summary: asyncio.Task[None] | None = None  # held: the loop keeps only a weak reference to a task
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
        self._routes = Routes(self.app, auth=self.auth, guard=self.guard)
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
        """Stop serving and end the thread; a shutdown that fails or overruns is logged, and stopping goes on."""
        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=3)
            except Exception:  # noqa: BLE001  (the process is ending: say what went wrong, then close the rest)
                _log.warning("HTTP server shutdown did not complete; closing its sockets anyway", exc_info=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            if not self._thread.is_alive():
                _cancel_the_rest(self._loop)
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


def _cancel_the_rest(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the tasks a stopped loop still holds and let each see it (else each is "destroyed but pending")."""
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.wait(pending, timeout=1.0))
    loop.close()
