"""web/connections.py over real sockets: deadlines, the connection cap, counted refusals and their log summary."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from pathlib import Path

import pytest

from gunicorn_cert_exporter.web import webconfig
from gunicorn_cert_exporter.web.connections import Limits
from tests.support import PKI, Issued, RunningExporter, StartExporter, eventually, write_chain


def _connect(exporter: RunningExporter) -> socket.socket:
    return socket.create_connection(("127.0.0.1", exporter.port), timeout=10)


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """Tell whether the server closes ``sock`` within ``within`` seconds (reading whatever it sends)."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True  # reset
    return True


def test_idle_and_dripping_connections_do_not_starve_metrics(run_exporter: StartExporter) -> None:
    """200 idle and 50 dripping connections, past a cap of 100: each scrape still gets its answer."""
    exporter: RunningExporter = run_exporter("{}", limits=Limits(max_connections=100))
    held: list[socket.socket] = []
    stop = threading.Event()

    def drip(sock: socket.socket) -> None:
        for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
            if stop.wait(0.2):
                return
            try:
                sock.send(bytes([byte]))
            except OSError:
                return

    try:
        held += [_connect(exporter) for _ in range(200)]
        drippers = [_connect(exporter) for _ in range(50)]
        held += drippers
        threads = [threading.Thread(target=drip, args=(s,), daemon=True) for s in drippers]
        for thread in threads:
            thread.start()
        for _ in range(10):
            assert exporter.get("/healthz") == (200, b"ok\n")
            assert "gunicorn_cert_exporter_build_info" in "".join(exporter.metrics())
        refused = exporter.metrics()['gunicorn_cert_exporter_http_refused_total{reason="connection_limit"}']
        assert refused >= 150  # the oldest idle connections made room
    finally:
        stop.set()
        for sock in held:
            sock.close()


def test_a_request_must_complete_its_headers_within_the_deadline(
    run_exporter: StartExporter, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that drips its headers is closed at the header deadline, however often it sends a byte."""
    limits = Limits(header_timeout=1.0, idle_timeout=30.0, log_every=0.5)
    exporter: RunningExporter = run_exporter("{}", limits=limits)
    caplog.set_level(logging.WARNING, logger="gunicorn_cert_exporter.web")
    with _connect(exporter) as sock:
        closed = False
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200:  # a byte every 0.1 s: 24 s
            try:
                sock.send(bytes([byte]))
            except OSError:
                closed = True
                break
            if _closed_by_server(sock, within=0.1):
                closed = True
                break
        assert closed, "a dripping client kept its connection"
    # The server's own account of why it closed it: the header deadline, not an idle timeout or the client.
    assert exporter.metrics()['gunicorn_cert_exporter_http_refused_total{reason="header_timeout"}'] == 1
    summary = eventually(
        lambda: [r for r in caplog.records if r.getMessage() == "connections or requests refused"],
        "a log summary of refusals",
        timeout=20,
    )
    assert getattr(summary[0], "refused_header_timeout", None) == 1


def test_an_idle_connection_is_closed_at_the_idle_deadline(run_exporter: StartExporter) -> None:
    exporter: RunningExporter = run_exporter("{}", limits=Limits(idle_timeout=1.0))
    with _connect(exporter) as sock:
        assert _closed_by_server(sock, within=15)
    assert exporter.metrics()['gunicorn_cert_exporter_http_refused_total{reason="idle_timeout"}'] >= 1


def test_refusals_are_summarised_not_logged_one_line_each(
    run_exporter: StartExporter, caplog: pytest.LogCaptureFixture
) -> None:
    exporter: RunningExporter = run_exporter("{}", limits=Limits(idle_timeout=0.2, log_every=3600))
    caplog.set_level(logging.DEBUG, logger="gunicorn_cert_exporter")
    socks = [_connect(exporter) for _ in range(30)]
    try:
        eventually(
            lambda: exporter.metrics()['gunicorn_cert_exporter_http_refused_total{reason="idle_timeout"}'] >= 30,
            "30 idle connections closed",
            timeout=30,
        )
    finally:
        for sock in socks:
            sock.close()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == []  # the summary comes once per log_every, not once per connection


def test_a_stalled_tls_handshake_is_aborted_and_counted(
    run_exporter: StartExporter, tmp_path: Path, pki: PKI, root: Issued
) -> None:
    """A partial ClientHello holds nothing past the handshake deadline; a real client is served meanwhile."""
    cert_path, key_path = write_chain(tmp_path, "web", pki.leaf(root))
    tls = webconfig.ReloadingContext(webconfig.TLSServerConfig(cert_file=str(cert_path), key_file=str(key_path)))
    exporter: RunningExporter = run_exporter("{}", tls=tls, limits=Limits(handshake_timeout=1.0))
    client = ssl.create_default_context(cadata=root.cert_pem.decode())
    with _connect(exporter) as stalled:
        stalled.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # the start of a ClientHello
        with (
            socket.create_connection(("127.0.0.1", exporter.port), timeout=10) as raw,
            client.wrap_socket(raw, server_hostname="localhost") as good,
        ):
            good.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert good.recv(100).startswith(b"HTTP/1.1 200")
        assert _closed_by_server(stalled, within=15)

    def counted() -> bool:
        request_context = ssl.create_default_context(cadata=root.cert_pem.decode())
        import urllib.request

        with urllib.request.urlopen(exporter.url + "/metrics", context=request_context, timeout=10) as response:
            body = response.read().decode()
        return 'gunicorn_cert_exporter_http_refused_total{reason="tls_handshake"} 1.0' in body

    eventually(counted, "the stalled handshake counted", timeout=20)
