"""STARTTLS preambles: bring a plain connection to the point where the TLS handshake starts."""

from __future__ import annotations

import re
import socket
import struct
from collections.abc import Callable

_FINAL_LINE = re.compile(rb"^(\d{3}) ", re.MULTILINE)
_MAX_REPLY = 16 * 1024
_POSTGRES_SSL_REQUEST = struct.pack("!II", 8, 80877103)


class StartTLSError(Exception):
    """The server did not agree to start TLS."""


Remaining = Callable[[], float]
"""Seconds left before the probe's deadline: a server that drips its reply can't stretch the timeout."""


def _read_until(sock: socket.socket, remaining: Remaining, done: Callable[[bytes], bool]) -> bytes:
    data = b""
    while not done(data):
        left = remaining()
        if left <= 0:
            raise TimeoutError("STARTTLS reply not complete before the deadline")
        sock.settimeout(left)
        chunk = sock.recv(4096)
        if not chunk:
            raise StartTLSError("connection closed before the server answered")
        data += chunk
        if len(data) > _MAX_REPLY:
            raise StartTLSError("server reply too long")
    return data


def _reply_code(sock: socket.socket, remaining: Remaining) -> int:
    """Read a (multi-line) SMTP/FTP reply and return its code."""
    reply = _read_until(sock, remaining, lambda d: d.endswith(b"\n") and _FINAL_LINE.search(d) is not None)
    match = _FINAL_LINE.search(reply)
    return int(match.group(1)) if match else 0


def _line(sock: socket.socket, remaining: Remaining) -> bytes:
    return _read_until(sock, remaining, lambda d: d.endswith(b"\n"))


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise StartTLSError(what)


def smtp(sock: socket.socket, remaining: Remaining) -> None:
    """EHLO then STARTTLS (RFC 3207)."""
    _expect(_reply_code(sock, remaining) == 220, "no SMTP greeting")
    sock.sendall(b"EHLO gunicorn-cert-exporter\r\n")
    _expect(_reply_code(sock, remaining) == 250, "EHLO refused")
    sock.sendall(b"STARTTLS\r\n")
    _expect(_reply_code(sock, remaining) == 220, "STARTTLS refused")


def ftp(sock: socket.socket, remaining: Remaining) -> None:
    """AUTH TLS (RFC 4217)."""
    _expect(_reply_code(sock, remaining) == 220, "no FTP greeting")
    sock.sendall(b"AUTH TLS\r\n")
    _expect(_reply_code(sock, remaining) == 234, "AUTH TLS refused")


def imap(sock: socket.socket, remaining: Remaining) -> None:
    """STARTTLS (RFC 3501)."""
    _expect(_line(sock, remaining).startswith(b"* OK"), "no IMAP greeting")
    sock.sendall(b"a1 STARTTLS\r\n")
    reply = _read_until(sock, remaining, lambda d: b"a1 " in d and d.endswith(b"\n"))
    _expect(b"a1 OK" in reply, "STARTTLS refused")


def pop3(sock: socket.socket, remaining: Remaining) -> None:
    """STLS (RFC 2595)."""
    _expect(_line(sock, remaining).startswith(b"+OK"), "no POP3 greeting")
    sock.sendall(b"STLS\r\n")
    _expect(_line(sock, remaining).startswith(b"+OK"), "STLS refused")


def postgres(sock: socket.socket, remaining: Remaining) -> None:
    """SSLRequest (PostgreSQL protocol 3)."""
    sock.sendall(_POSTGRES_SSL_REQUEST)
    _expect(_read_until(sock, remaining, bool) == b"S", "server does not offer SSL")


PROTOCOLS: dict[str, Callable[[socket.socket, Remaining], None]] = {
    "smtp": smtp,
    "ftp": ftp,
    "imap": imap,
    "pop3": pop3,
    "postgres": postgres,
}
