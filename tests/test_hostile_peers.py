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
from tests.support.pki import PKI, Issued
from tests.support.tls import TLSServer, server_context
from tests.support.waiting import eventually


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
        self.cut: list[int] = []  # for each client that hung up mid-drip: how many bytes it had been sent
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
                self._drip(server, client)
                return
            client.sendall(_read_record(server))  # the real ServerHello
            if self.mode == "garbage_after_hello":
                client.sendall(b"\x17\x03\x03\x00\x40" + os.urandom(64))
                time.sleep(5)  # the behaviour under test: hold the connection open after the garbage
            elif self.mode == "rst_after_hello":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
        except OSError:
            pass

    def _drip(self, server: socket.socket, client: socket.socket) -> None:
        """Pass the server's bytes on one every 0.2 s (the pace IS the hostile behaviour): minutes for a handshake."""
        sent = 0
        while data := server.recv(4096):
            for i in range(len(data)):
                try:
                    client.sendall(data[i : i + 1])
                except OSError:
                    self.cut.append(sent)
                    return
                sent += 1
                time.sleep(0.2)  # the pace IS the hostile behaviour

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


def probe(address: str, timeout: float = 2.0, **extra: object) -> AddressResult:
    result = Prober().probe(EndpointConfig.model_validate({"address": address, "timeout": timeout, **extra}))
    return result.addresses[0]


def test_slow_drip_handshake_costs_the_timeout_not_more(proxy: Callable[[str], HostileProxy]) -> None:
    """Each byte comes well within a per-read timeout, so only a deadline on the whole handshake ends it."""
    dripping = proxy("drip")
    result = probe(dripping.address, timeout=2.0)
    assert result.error is EndpointReason.STALLED
    # The probe hung up while the peer still had its handshake to drip (minutes of it): a cut, not an end.
    eventually(lambda: dripping.cut, "the peer to see the probe hang up mid-drip")


def test_garbage_after_server_hello(proxy: Callable[[str], HostileProxy]) -> None:
    # Not STALLED: the probe failed on the garbage, not at its deadline while the peer held the connection.
    assert probe(proxy("garbage_after_hello").address).error is EndpointReason.HANDSHAKE_FAILURE


def test_reset_in_the_middle_of_the_handshake(proxy: Callable[[str], HostileProxy]) -> None:
    assert probe(proxy("rst_after_hello").address).error is EndpointReason.RESET


def test_a_100_certificate_chain_is_reported_whole(tls_server: type[TLSServer], pki: PKI, root: Issued) -> None:
    chain = [pki.issue("ca-0", issuer=root, ca=True)]
    for i in range(1, 99):
        chain.append(pki.issue(f"ca-{i}", issuer=chain[-1], ca=True))
    leaf = pki.leaf(chain[-1])
    server = tls_server("127.0.0.1", context=server_context((leaf, *reversed(chain))))
    result = probe(server.address, timeout=5)
    assert result.up and len(result.chain) == 100
    assert result.chain[0].fingerprint_sha256 == leaf.fingerprint


def test_an_endless_chain_is_refused_quickly(tls_server: type[TLSServer], pki: PKI, root: Issued) -> None:
    filler = pki.issue("filler", issuer=root, ca=True)
    server = tls_server("127.0.0.1", context=server_context((pki.leaf(root), *([filler] * 400))))
    result = probe(server.address, timeout=5)
    assert result.error is EndpointReason.HANDSHAKE_FAILURE  # OpenSSL's certificate list limit, not the deadline


def test_a_starttls_server_that_drips_its_greeting_costs_the_timeout() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    cut: list[int] = []

    def drip() -> None:
        conn, _ = listener.accept()
        for sent, byte in enumerate(b"220-" + b"x" * 1000):
            try:
                conn.sendall(bytes([byte]))
            except OSError:
                cut.append(sent)
                return
            time.sleep(0.1)  # the pace IS the hostile behaviour: 100 s for the whole greeting

    threading.Thread(target=drip, daemon=True).start()
    result = probe(f"127.0.0.1:{listener.getsockname()[1]}", timeout=1.5, starttls="smtp")
    listener.close()
    assert result.error is EndpointReason.STALLED
    # The probe hung up while most of the greeting was still to come.
    eventually(lambda: cut, "the peer to see the probe hang up mid-greeting")
