"""The bounded fetcher: allow-list before any connection, no second resolution, caps on size, time and redirects."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gunicorn_cert_exporter.sources.fetch import Fetcher, FetchLimits, FetchReason, permitted, retry_after
from tests.support import PKI, Issued, eventually, serve_in_thread


class _Handler(BaseHTTPRequestHandler):
    server: Origin

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Host", "")))
        if self.path == "/ok":
            self._send(200, b"hello")
        elif self.path == "/big":
            self._send(200, b"x" * 5000)
        elif self.path == "/big-chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(10):
                self.wfile.write(b"3e8\r\n" + b"y" * 1000 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/drip":
            self.send_response(200)
            self.send_header("Content-Length", "300")
            self.end_headers()
            self._drip(b"z")
        elif self.path == "/drip-headers":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")  # a header line that never ends within the cap
            if self._drip(b"s"):
                self.wfile.write(b"\r\nContent-Length: 0\r\n\r\n")
        elif self.path == "/declared-huge":
            self.send_response(200)
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            time.sleep(10)  # the rest never comes: only the declared length can tell at once
        elif self.path == "/busy":
            self._send(503, b"", {"Retry-After": "3600"})
        elif self.path.startswith("/to/"):
            self._send(302, b"", {"Location": self.path.removeprefix("/to/")})
        elif self.path == "/loop":
            self._send(302, b"", {"Location": "/loop"})
        else:
            self._send(404, b"")

    def _drip(self, byte: bytes) -> bool:
        """Send a byte every 0.1 s for 30 s (far past the tests' time caps, each byte within a read timeout).

        Record whether the client took it all ("finished") or hung up first ("cut").
        """
        try:
            for _ in range(300):
                self.wfile.write(byte)
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            self.server.drips.append("cut")
            return False
        self.server.drips.append("finished")
        return True

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Origin(ThreadingHTTPServer):
    """An HTTP server on a loopback address that records each request and counts connections."""

    daemon_threads = True

    def __init__(self, host: str) -> None:
        self.seen: list[tuple[str, str]] = []
        self.drips: list[str] = []  # how each dripped answer ended: "cut" by the client, or "finished"
        self.connections = 0
        super().__init__((host, 0), _Handler)
        serve_in_thread(self)

    def verify_request(self, request: object, client_address: object) -> bool:
        self.connections += 1
        return True

    @property
    def base(self) -> str:
        host, port = self.socket.getsockname()[:2]
        return f"http://{host}:{port}"


@pytest.fixture
def origin() -> Iterator[Origin]:
    server = Origin("127.0.0.1")
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def elsewhere() -> Iterator[Origin]:
    """A second loopback server on an address no test lists."""
    server = Origin("127.0.0.3")
    yield server
    server.shutdown()
    server.server_close()


def fetcher(allow: tuple[str, ...] = ("127.0.0.1",), **limits: float) -> Fetcher:
    return Fetcher(limits=FetchLimits(allow=allow, **limits))  # type: ignore[arg-type]


def test_a_listed_loopback_address_is_fetched(origin: Origin) -> None:
    answer = fetcher().get(origin.base + "/ok")
    assert answer.ok and answer.status == 200 and answer.body == b"hello"


def test_an_unlisted_loopback_address_is_never_contacted(origin: Origin) -> None:
    answer = fetcher(allow=()).get(origin.base + "/ok")
    assert answer.error is FetchReason.REFUSED_ADDRESS
    fetcher().get(origin.base + "/ok")  # the server counts connections: a listed fetch is seen
    assert origin.connections == 1 and origin.seen == [("/ok", origin.base.removeprefix("http://"))]


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "192.168.1.1", "169.254.169.254", "::1", "fe80::1", "::ffff:127.0.0.1", "0.0.0.0"],
)
def test_private_loopback_and_link_local_addresses_need_listing(address: str) -> None:
    import ipaddress

    ip = ipaddress.ip_address(address)
    assert not permitted("h", ip, [])
    assert permitted("h", ip, ["0.0.0.0/0", "::/0"])
    assert permitted("ca.internal", ip, ["*.internal"])


def test_a_global_address_needs_no_listing() -> None:
    import ipaddress

    assert permitted("acme-v02.api.letsencrypt.org", ipaddress.ip_address("8.8.8.8"), [])


def test_a_redirect_is_checked_like_the_first_url(origin: Origin, elsewhere: Origin) -> None:
    answer = fetcher().get(f"{origin.base}/to/{elsewhere.base}/ok")
    assert answer.error is FetchReason.REFUSED_ADDRESS
    assert elsewhere.connections == 0
    followed = fetcher(allow=("127.0.0.1", "127.0.0.3")).get(f"{origin.base}/to/{elsewhere.base}/ok")
    assert followed.ok and followed.body == b"hello" and elsewhere.connections == 1


def test_redirects_are_bounded(origin: Origin) -> None:
    answer = fetcher(max_redirects=2).get(origin.base + "/loop")
    assert answer.error is FetchReason.TOO_MANY_REDIRECTS
    assert len(origin.seen) == 3  # the first request and two redirects


def test_the_checked_address_is_the_one_connected_to(elsewhere: Origin) -> None:
    """No second resolution: the name is resolved once (here by the injected resolver) and that address is used.

    The system resolves ``localhost`` to 127.0.0.1, where nothing listens on this port; a connection by name would
    fail, and one to the address the check saw reaches the server on 127.0.0.3 with the name as Host.
    """
    port = elsewhere.server_address[1]
    pinned = Fetcher(limits=FetchLimits(allow=("127.0.0.3",)), resolver=lambda host, port: ["127.0.0.3"])
    answer = pinned.get(f"http://localhost:{port}/ok")
    assert answer.ok, answer
    assert elsewhere.seen == [("/ok", f"localhost:{port}")]


def test_a_body_over_the_cap_is_too_large(origin: Origin) -> None:
    assert fetcher(max_size=4096).get(origin.base + "/big").error is FetchReason.TOO_LARGE
    assert fetcher(max_size=4096).get(origin.base + "/big-chunked").error is FetchReason.TOO_LARGE
    assert fetcher(max_size=10_000).get(origin.base + "/big-chunked").ok


@pytest.mark.parametrize("path", ["/drip", "/drip-headers"])
def test_a_dripping_server_is_cut_at_the_total_time_cap(origin: Origin, path: str) -> None:
    """Each byte comes well within any read timeout; only a cap on the whole request ends it (the server sees it)."""
    answer = fetcher(timeout=1.0).get(origin.base + path)
    assert answer.error is FetchReason.TIMEOUT
    assert eventually(lambda: origin.drips, "the server noticing how its answer ended") == ["cut"]


def test_a_declared_length_over_the_cap_is_refused_before_reading(origin: Origin) -> None:
    """Content-Length says 1 GB: refused at once, not read until the time cap."""
    answer = fetcher(timeout=5.0, max_size=4096).get(origin.base + "/declared-huge")
    assert answer.error is FetchReason.TOO_LARGE


def test_retry_after_is_honoured_per_url(origin: Origin) -> None:
    now = [1_000_000.0]
    client = Fetcher(limits=FetchLimits(allow=("127.0.0.1",)), clock=lambda: now[0])
    first = client.get(origin.base + "/busy")
    assert first.error is FetchReason.HTTP_STATUS and first.status == 503
    assert first.retry_after == now[0] + 3600
    again = client.get(origin.base + "/busy")
    assert again.error is FetchReason.RETRY_LATER
    assert client.get(origin.base + "/ok").ok  # another URL of the same server is not held back
    assert [path for path, _ in origin.seen] == ["/busy", "/ok"]
    now[0] += 3601
    assert client.get(origin.base + "/busy").status == 503
    assert [path for path, _ in origin.seen] == ["/busy", "/ok", "/busy"]


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after("120", now=1000.0) == 1120.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=0.0) == 86400.0  # capped at a day ahead
    assert retry_after("soon", now=0.0) is None


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "http:///x", "http://127.0.0.1:99999/", "file:///etc/passwd"])
def test_only_http_urls_with_a_host(url: str) -> None:
    assert fetcher().get(url).error is FetchReason.BAD_URL


def test_a_name_that_does_not_resolve() -> None:
    def fail(host: str, port: int) -> list[str]:
        raise socket.gaierror("no such name")

    assert Fetcher(limits=FetchLimits(), resolver=fail).get("http://nowhere.invalid/").error is FetchReason.DNS_FAILURE


class TLSOrigin(Origin):
    """The same server behind TLS, with a certificate for ``localhost`` only (no IP address in it)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__("127.0.0.1")
        self.socket = context.wrap_socket(self.socket, server_side=True)


def test_https_verifies_the_certificate_for_the_urls_name_on_the_checked_address(tmp_path: Path) -> None:
    """Connected to the address the check saw, the handshake still verifies the certificate against the URL's host."""
    pki = PKI()
    ca = pki.ca()
    leaf = pki.leaf(ca, sans=("localhost",))
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(*_pair(leaf, tmp_path))
    server = TLSOrigin(served)
    try:
        port = server.socket.getsockname()[1]
        trusting = ssl.create_default_context(cadata=ca.cert_pem.decode())
        client = Fetcher(limits=FetchLimits(allow=("127.0.0.1",)), resolver=lambda h, p: ["127.0.0.1"], tls=trusting)
        answer = client.get(f"https://localhost:{port}/ok")
        assert answer.ok and answer.body == b"hello", answer
        assert client.get(f"https://127.0.0.1:{port}/ok").error is FetchReason.TLS_ERROR  # not valid for the IP
        untrusting = Fetcher(limits=FetchLimits(allow=("127.0.0.1",)), resolver=lambda h, p: ["127.0.0.1"])
        assert untrusting.get(f"https://localhost:{port}/ok").error is FetchReason.TLS_ERROR  # unknown CA
    finally:
        server.shutdown()
        server.server_close()


def _pair(issued: Issued, directory: Path) -> tuple[str, str]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    cert.write_bytes(issued.cert_pem)
    key.write_bytes(issued.key_pem)
    return str(cert), str(key)
