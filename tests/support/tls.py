"""Real TLS (or deliberately broken) servers on loopback, run in threads."""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
from pathlib import Path

from tests.support.pki import Issued, write_chain
from tests.support.serving import POLL


class TLSServer:
    """A real TLS (or deliberately broken) server on a loopback address, run in a thread."""

    def __init__(
        self,
        host: str,
        *,
        mode: str = "tls",
        context: ssl.SSLContext | None = None,
        port: int = 0,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(256)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.mode, self.context = mode, context
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._open_lock = threading.Lock()
        self.open = 0  # stall mode: connections held now (the client has not hung up)
        self.peak = 0  # stall mode: the most connections held at once
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def _serve(self) -> None:
        self.sock.settimeout(POLL)  # close() waits for the accept loop to notice
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            if self.mode == "stall":
                self._stall(conn)
                return
            if self.mode == "reset":
                conn.recv(1024)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                return
            if self.mode == "plaintext":
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                conn.close()
                return
            assert self.context is not None
            conn.settimeout(5)
            with self.context.wrap_socket(conn, server_side=True) as tls:
                with contextlib.suppress(OSError, ssl.SSLError):
                    tls.recv(1)
        except (OSError, ssl.SSLError):
            conn.close()

    def _stall(self, conn: socket.socket) -> None:
        """Accept and never answer; count the connection as open until the client hangs up."""
        with self._open_lock:
            self._held.append(conn)
            self.open += 1
            self.peak = max(self.peak, self.open)
        with contextlib.suppress(OSError):
            while conn.recv(4096):
                pass
        with self._open_lock:
            self.open -= 1

    @property
    def held(self) -> int:
        """Return how many connections a ``stall`` server has accepted (it answers none of them)."""
        return len(self._held)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
        for conn in self._held:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # wakes the thread reading it
            conn.close()


def server_context(chain: tuple[Issued, ...], *, client_ca: Issued | None = None) -> ssl.SSLContext:
    """A server context serving ``chain`` (leaf first) with the leaf's key."""
    import tempfile

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = write_chain(Path(tmp), "srv", *chain)
        context.load_cert_chain(cert_path, key_path)
        if client_ca is not None:
            ca_path = Path(tmp) / "client-ca.pem"
            ca_path.write_bytes(client_ca.cert_pem)
            context.load_verify_locations(ca_path)
            context.verify_mode = ssl.CERT_REQUIRED
    return context


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True
