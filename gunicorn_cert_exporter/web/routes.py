"""The routes: /metrics, /probe, /healthz, /-/reload, the status page and its JSON; the only place with status codes.

Nothing slow happens on the loop: bcrypt, probes, reloads and the status page run in bounded pools (web.pools), and
/metrics only joins bytes that the scans rendered when they published (metrics.render_cache).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

from aiohttp import web
from prometheus_client import CollectorRegistry

from gunicorn_cert_exporter import status as host_status
from gunicorn_cert_exporter.bands import Thresholds
from gunicorn_cert_exporter.escapes import strict_json
from gunicorn_cert_exporter.metrics.exposition import EOF, encode
from gunicorn_cert_exporter.metrics.render_cache import RenderCache
from gunicorn_cert_exporter.model import Snapshot
from gunicorn_cert_exporter.service import ProbeOutcome, ProbeRefusal, Service
from gunicorn_cert_exporter.web import status_page
from gunicorn_cert_exporter.web.auth import Authorizer
from gunicorn_cert_exporter.web.connections import Guard, Refusals
from gunicorn_cert_exporter.web.negotiation import format_for, gzip_wanted
from gunicorn_cert_exporter.web.pools import Slots
from gunicorn_cert_exporter.web.webconfig import BasicAuth

_WRITE_SLICE = 1 << 20  # a slow reader holds at most about this much of a body in its transport's buffer
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_REFUSAL_STATUS = {ProbeRefusal.MALFORMED: 400, ProbeRefusal.NOT_ALLOWED: 403}


@dataclass(frozen=True)
class App:
    """What the HTTP layer serves; everything it may call, injected."""

    exposition: RenderCache
    snapshot: Callable[[], Snapshot]
    probe: Callable[[list[str], list[str]], ProbeOutcome]
    reload: Callable[[], list[str] | None]  # the problems of a reload applied now, or None: coalesced into the next
    refusals: Refusals = field(default_factory=Refusals)
    clock: Callable[[], float] = time.time
    thresholds: Callable[[], Thresholds] = Thresholds  # the config's bands, as the page and the API judge
    probe_revocation: Callable[[list[str], list[str]], ProbeOutcome] | None = None  # /probe?...&revocation=1


def app_for(service: Service, *, live: CollectorRegistry | None = None) -> App:
    """Serve a service: /metrics from its snapshot (plus ``live`` series such as process and GC), /probe, reload."""
    refusals = Refusals()
    live_series = [live or CollectorRegistry(), refusals, service.reloads]
    exposition = RenderCache(snapshot=service.snapshot, live=live_series)
    service.subscribe(exposition.publish)  # each scan renders its own part on its own thread, as it publishes
    exposition.publish(service.snapshot())
    return App(
        exposition=exposition,
        snapshot=service.snapshot,
        probe=service.probe,
        probe_revocation=partial(service.probe, revocation=True),
        reload=service.reloads.now,
        refusals=refusals,
        thresholds=lambda: service.config.bands.thresholds,
    )


def _busy(app: App) -> web.Response:
    app.refusals.add("busy")
    return web.Response(status=503, text="busy\n", headers={"Retry-After": "1"})


def _too_large(app: App) -> web.Response:
    app.refusals.add("body_too_large")
    return web.Response(status=413, text="request body too large\n", headers={"Connection": "close"})


class Routes:
    """The handlers, with the bounded pools they use."""

    def __init__(self, app: App, *, auth: BasicAuth, guard: Guard) -> None:
        self.app, self.guard, self.limits = app, guard, guard.limits
        self._auth = Authorizer(auth, checks=self.limits.auth_checks, refusals=app.refusals)
        self._probes = Slots(self.limits.probes, name="probe")
        self._work = Slots(2, name="web")  # the status page and reloads
        self._metrics = Slots(2, name="metrics")  # never queued behind the page, never refused

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
        """Stop the pools."""
        self._auth.close()
        for pool in (self._probes, self._work, self._metrics):
            pool.close()

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
            response = await self._auth.refusal(request) or await handler(request)
            if not response.prepared:
                response.headers.setdefault("X-Content-Type-Options", "nosniff")
            return response
        finally:
            if deadline is not None:
                deadline.cancel()
            self.guard.request_finished(transport)

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        """Serve the ready bytes of the last snapshot, plus the live series."""
        fmt, content_type = format_for(request.headers.get("Accept", ""))
        gzipped = gzip_wanted(request.headers.get("Accept-Encoding", ""))
        exposition = self.app.exposition
        if exposition.live_is_fresh(fmt):  # only joins ready bytes: no thread hop
            pieces = exposition.body(fmt, gzipped=gzipped)
        else:  # runs the live collectors (they read /proc): off the loop
            pieces = await self._metrics.run(lambda: exposition.body(fmt, gzipped=gzipped))
        headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding", "X-Content-Type-Options": "nosniff"}
        response = web.StreamResponse(headers=headers)
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
        if self._probes.full:
            self.app.refusals.add("probe_busy")
            return web.Response(status=503, text="too many probes at once\n", headers={"Retry-After": "1"})
        targets, names = request.query.getall("target", []), request.query.getall("server_name", [])
        probe = self.app.probe_revocation if request.query.get("revocation") == "1" else None
        outcome = await self._probes.run(lambda: (probe or self.app.probe)(list(targets), list(names)))
        if outcome.registry is None:
            status = _REFUSAL_STATUS[outcome.refusal or ProbeRefusal.MALFORMED]
            return web.Response(status=status, text=outcome.message + "\n")
        registry = outcome.registry
        fmt, content_type = format_for(request.headers.get("Accept", ""))
        body = await self._metrics.run(lambda: encode(fmt, registry) + (EOF if fmt == "openmetrics" else b""))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(self, _request: web.Request) -> web.Response:
        """Say the server answers."""
        return web.Response(text="ok\n")

    async def status(self, request: web.Request) -> web.Response:
        """Render the HTML status page off the loop, two at a time at most; ``?q=`` filters it without JavaScript."""
        if self._work.full:
            return _busy(self.app)
        app, wanted = self.app, request.query.get("q", "")

        def render() -> bytes:
            page = status_page.render(app.snapshot(), now=app.clock(), query=wanted, thresholds=app.thresholds())
            # File names may hold bytes that are not UTF-8 (surrogates here): show them escaped, never fail.
            return page.encode("utf-8", "backslashreplace")

        body = await self._work.run(render)
        return web.Response(body=body, headers={"Content-Type": "text/html; charset=utf-8"})

    async def status_json(self, _request: web.Request) -> web.Response:
        """Serve the status page's content as JSON (docs/status-api.md), built off the loop like the page."""
        if self._work.full:
            return _busy(self.app)
        app = self.app

        def render() -> bytes:
            view = host_status.build(app.snapshot(), now=app.clock(), thresholds=app.thresholds())
            # Strict JSON (null for NaN and infinities), control characters escaped; names may hold non-UTF-8 bytes.
            body = strict_json(host_status.document(view), indent=1) + "\n"
            return body.encode("utf-8", "backslashreplace")

        body = await self._work.run(render)
        return web.Response(body=body, headers={"Content-Type": "application/json; charset=utf-8"})

    async def reload(self, request: web.Request) -> web.Response:
        """Reload the config, at most once a second; the body is read (bounded) so it is never taken for a request."""
        if request.content_length is not None and request.content_length > self.limits.max_body:
            return _too_large(self.app)
        try:
            await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large(self.app)
        if self._work.full:
            return _busy(self.app)
        problems = await self._work.run(self.app.reload)
        if problems is None:
            text = "reload coalesced into the next one (at most one a second)\n"
            return web.Response(status=429, text=text, headers={"Retry-After": "1"})
        if problems:
            return web.Response(status=500, text="\n".join(problems) + "\n")
        return web.Response(text="reloaded\n")
