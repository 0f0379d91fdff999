"""Hostile TLS peers: each costs at most its timeout, gets a reason, and never hangs or crashes a scan."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from gunicorn_cert_exporter.config import EndpointConfig
from gunicorn_cert_exporter.model import AddressResult, EndpointReason
from gunicorn_cert_exporter.sources.endpoints import Prober
from tests.support import PKI, Issued, TLSServer, server_context


def _read_record(sock: socket.socket) -> bytes:
    header = b""
    while len(header) < 5:
        chunk = sock.recv(5 - len(header))
        if not chunk:
            return header
        header += chunk
    length = struct.unpack("!H", header[3:5])[0]
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            break
        body += chunk
    return header + body


class HostileProxy:
    """Sits in front of a real TLS server and misbehaves on the server's side of the conversation."""

    def __init__(self, upstream: tuple[str, int], mode: str) -> None:
        self.mode, self.upstream = mode, upstream
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream)
            server.sendall(client.recv(65536))  # the ClientHello
            if self.mode == "drip":
                while data := server.recv(4096):
                    for i in range(len(data)):
                        client.sendall(data[i : i + 1])
                        time.sleep(0.2)
                return
            client.sendall(_read_record(server))  # the real ServerHello
            if self.mode == "garbage_after_hello":
                client.sendall(b"\x17\x03\x03\x00\x40" + os.urandom(64))
                time.sleep(5)
            elif self.mode == "rst_after_hello":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def proxy(tls_server: type[TLSServer], pki: PKI, root: Issued) -> Iterator[Callable[[str], HostileProxy]]:
    made: list[HostileProxy] = []
    server = tls_server("127.0.0.1", context=server_context((pki.leaf(root),)))

    def make(mode: str) -> HostileProxy:
        made.append(HostileProxy(("127.0.0.1", server.port), mode))
        return made[-1]

    yield make
    for p in made:
        p.close()


def probe(address: str, timeout: float = 2.0, **extra: object) -> tuple[AddressResult, float]:
    started = time.monotonic()
    result = Prober().probe(EndpointConfig.model_validate({"address": address, "timeout": timeout, **extra}))
    return result.addresses[0], time.monotonic() - started


def test_slow_drip_handshake_costs_the_timeout_not_more(proxy: Callable[[str], HostileProxy]) -> None:
    result, took = probe(proxy("drip").address, timeout=2.0)
    assert result.error is EndpointReason.STALLED
    assert took < 3.0, f"a dripping peer held the probe {took:.1f}s with a 2s timeout"


def test_garbage_after_server_hello(proxy: Callable[[str], HostileProxy]) -> None:
    result, took = probe(proxy("garbage_after_hello").address)
    assert result.error is EndpointReason.HANDSHAKE_FAILURE and took < 3


def test_reset_in_the_middle_of_the_handshake(proxy: Callable[[str], HostileProxy]) -> None:
    result, took = probe(proxy("rst_after_hello").address)
    assert result.error is EndpointReason.RESET and took < 3


def test_a_100_certificate_chain_is_reported_whole(tls_server: type[TLSServer], pki: PKI, root: Issued) -> None:
    chain = [pki.issue("ca-0", issuer=root, ca=True)]
    for i in range(1, 99):
        chain.append(pki.issue(f"ca-{i}", issuer=chain[-1], ca=True))
    leaf = pki.leaf(chain[-1])
    server = tls_server("127.0.0.1", context=server_context((leaf, *reversed(chain))))
    result, took = probe(server.address, timeout=5)
    assert result.up and len(result.chain) == 100 and took < 5
    assert result.chain[0].fingerprint_sha256 == leaf.fingerprint


def test_an_endless_chain_is_refused_quickly(tls_server: type[TLSServer], pki: PKI, root: Issued) -> None:
    filler = pki.issue("filler", issuer=root, ca=True)
    server = tls_server("127.0.0.1", context=server_context((pki.leaf(root), *([filler] * 400))))
    result, took = probe(server.address, timeout=5)
    assert result.error is EndpointReason.HANDSHAKE_FAILURE  # OpenSSL's certificate list limit
    assert took < 5


def test_a_starttls_server_that_drips_its_greeting_costs_the_timeout() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def drip() -> None:
        conn, _ = listener.accept()
        for byte in b"220-" + b"x" * 200:
            try:
                conn.sendall(bytes([byte]))
            except OSError:
                return
            time.sleep(0.1)

    threading.Thread(target=drip, daemon=True).start()
    result, took = probe(f"127.0.0.1:{listener.getsockname()[1]}", timeout=1.5, starttls="smtp")
    listener.close()
    assert result.error is EndpointReason.STALLED
    assert took < 2.5, f"a dripping STARTTLS greeting held the probe {took:.1f}s"
