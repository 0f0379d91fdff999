"""HTTP: /metrics, /probe, /healthz, /-/reload and the status page, behind optional TLS and basic auth."""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from gunicorn_cert_exporter import status as host_status
from gunicorn_cert_exporter.metrics.collector import SnapshotCollector
from gunicorn_cert_exporter.metrics.render_cache import Exposition
from gunicorn_cert_exporter.model import Snapshot
from gunicorn_cert_exporter.service import ProbeOutcome, ProbeRefusal, Service
from gunicorn_cert_exporter.web import status_page
from gunicorn_cert_exporter.web.webconfig import BasicAuth, ReloadingContext

_HANDSHAKE_TIMEOUT = 10.0
_log = logging.getLogger("gunicorn_cert_exporter.web")


@dataclass(frozen=True, slots=True)
class Response:
    """An HTTP answer."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class App:
    """What the HTTP layer serves; everything it may call, injected."""

    exposition: Exposition
    snapshot: Callable[[], Snapshot]
    probe: Callable[[list[str], list[str]], ProbeOutcome]
    reload: Callable[[], list[str]]
    clock: Callable[[], float] = time.time


_REFUSAL_STATUS = {ProbeRefusal.MALFORMED: HTTPStatus.BAD_REQUEST, ProbeRefusal.NOT_ALLOWED: HTTPStatus.FORBIDDEN}


def app_for(service: Service, *, live: CollectorRegistry | None = None) -> App:
    """Serve a service: /metrics from its snapshot (plus ``live`` series such as process and GC), /probe, reload."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(SnapshotCollector(service.snapshot))
    exposition = Exposition(snapshot=service.snapshot, registry=registry, live=live or CollectorRegistry())
    return App(exposition=exposition, snapshot=service.snapshot, probe=service.probe, reload=service.reload)


class Server(ThreadingHTTPServer):
    """A threading HTTP server whose TLS handshakes happen in the request thread, not the accept loop."""

    daemon_threads = True
    request_queue_size = 128
    max_connections = 64  # each connection holds a thread; idle or dripping clients must not exhaust the host

    def __init__(
        self, address: tuple[str, int], *, app: App, auth: BasicAuth, tls: ReloadingContext | None, family: int
    ) -> None:
        self.address_family = family
        self.app, self.auth, self.tls = app, auth, tls
        self._slots = threading.BoundedSemaphore(self.max_connections)
        super().__init__(address, Handler, bind_and_activate=False)
        if family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            self.server_bind()
            self.server_activate()
        except OSError:
            self.server_close()
            raise

    def get_request(self) -> tuple[Any, Any]:
        """Accept, and wrap in TLS with the current cert (the handshake runs later, in the handler)."""
        sock, addr = self.socket.accept()
        if self.tls is not None:
            sock = self.tls.current().wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def process_request(self, request: Any, client_address: Any) -> None:  # noqa: ANN401
        """Serve in a thread if a connection slot is free; otherwise close at once."""
        if not self._slots.acquire(blocking=False):
            _log.warning("too many connections; closing one", extra={"client": str(client_address[0])})
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:  # noqa: ANN401
        """Serve one connection, then give its slot back."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: ANN401
        """Log a dropped connection quietly, and anything else as the bug it is."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):  # resets, TLS handshake failures, timeouts: the client's business
            _log.debug("connection failed", extra={"client": str(client_address[0]), "error": type(error).__name__})
        else:
            _log.exception("request failed", extra={"client": str(client_address[0])})


def listen(address: str, **kwargs: Any) -> Server:  # noqa: ANN401
    """Listen on ``host:port``; an empty host means every address, IPv6 and IPv4."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not host:
        try:
            return Server(("::", int(port)), family=socket.AF_INET6, **kwargs)
        except OSError:
            return Server(("0.0.0.0", int(port)), family=socket.AF_INET, **kwargs)  # noqa: S104
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return Server((host, int(port)), family=family, **kwargs)


class Handler(BaseHTTPRequestHandler):
    """Route one request."""

    server: Server
    server_version = "gunicorn-cert-exporter"
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        """Finish the TLS handshake under a timeout before reading the request."""
        self.request.settimeout(_HANDSHAKE_TIMEOUT)
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: ANN401
        """Log requests at debug level only (the access log would hold probe targets)."""
        _log.debug("request", extra={"client": self.client_address[0], "line": format % args})

    def do_GET(self) -> None:
        """Serve the read-only endpoints."""
        if not self._authorized():
            return
        url = urlsplit(self.path)
        app = self.server.app
        if url.path == "/metrics":
            gzip_ok = "gzip" in self.headers.get("Accept-Encoding", "")
            parts, content_type = app.exposition.render(self.headers.get("Accept", ""), gzip_ok=gzip_ok)
            headers = {"Content-Encoding": "gzip"} if gzip_ok else {}
            self._send(Response(HTTPStatus.OK, parts[0], content_type), headers, more=parts[1:])
        elif url.path == "/probe":
            query = parse_qs(url.query, keep_blank_values=True)
            outcome = app.probe(query.get("target", []), query.get("server_name", []))
            if outcome.registry is not None:
                self._metrics(outcome.registry)
            else:
                status = _REFUSAL_STATUS[outcome.refusal or ProbeRefusal.MALFORMED]
                self._send(Response(status, (outcome.message + "\n").encode()))
        elif url.path == "/healthz":
            self._send(Response(HTTPStatus.OK, b"ok\n"))
        elif url.path == "/":
            wanted = parse_qs(url.query).get("q", [""])[0]
            page = status_page.render(app.snapshot(), now=app.clock(), query=wanted)
            # File names may hold bytes that are not UTF-8 (surrogates here): show them escaped, never fail.
            self._send(Response(HTTPStatus.OK, page.encode("utf-8", "backslashreplace"), "text/html; charset=utf-8"))
        elif url.path == "/api/v1/status":
            document = host_status.document(host_status.build(app.snapshot(), now=app.clock()))
            body = json.dumps(document, indent=1, ensure_ascii=False).encode("utf-8", "backslashreplace")
            self._send(Response(HTTPStatus.OK, body + b"\n", "application/json; charset=utf-8"))
        else:
            self._send(Response(HTTPStatus.NOT_FOUND, b"not found\n"))

    def do_POST(self) -> None:
        """Serve /-/reload."""
        if not self._authorized():
            return
        if urlsplit(self.path).path != "/-/reload":
            self._send(Response(HTTPStatus.METHOD_NOT_ALLOWED, b"method not allowed\n"))
            return
        problems = self.server.app.reload()
        if problems:
            self._send(Response(HTTPStatus.INTERNAL_SERVER_ERROR, ("\n".join(problems) + "\n").encode()))
        else:
            self._send(Response(HTTPStatus.OK, b"reloaded\n"))

    def _authorized(self) -> bool:
        auth = self.server.auth
        if not auth.enabled:
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        user = password = ""
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user = password = ""
        if auth.check(user, password):
            return True
        self._send(Response(HTTPStatus.UNAUTHORIZED, b"unauthorized\n"), {"WWW-Authenticate": 'Basic realm="exporter"'})
        return False

    def _metrics(self, registry: CollectorRegistry) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        body = encoder(registry)
        headers = {}
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            body, headers = gzip.compress(body, compresslevel=5), {"Content-Encoding": "gzip"}
        self._send(Response(HTTPStatus.OK, body, content_type), headers)

    def _send(self, response: Response, headers: dict[str, str] | None = None, more: tuple[bytes, ...] = ()) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body) + sum(len(part) for part in more)))
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            for part in (response.body, *more):
                self.wfile.write(part)
