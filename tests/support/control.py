"""Unix socket servers: a silent or slow one, and a fake Gunicorn control socket."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

from tests.support.serving import POLL


class UnixServer:
    """A Unix socket server in a thread: ``reply`` bytes to every connection after ``delay``, or (None) silence.

    Subclasses answer otherwise by overriding ``handle``.
    """

    def __init__(self, path: Path, *, reply: bytes | None = None, delay: float = 0.0) -> None:
        self.path = path
        self._reply, self._delay = reply, delay
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(16)
        self.sock.settimeout(POLL)  # close() waits for the accept loop to notice
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        """Hold the connection, and send the reply (if any) after the delay."""
        self._held.append(conn)  # silent: accepted, never answered
        if self._reply is not None:
            time.sleep(self._delay)  # the behaviour under test: a server slow to answer
            with contextlib.suppress(OSError):
                conn.sendall(self._reply)

    @property
    def held(self) -> int:
        """Return how many connections it has accepted and holds (the base server holds every one)."""
        return len(self._held)

    def close(self) -> None:
        """Stop serving and close every connection."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
        for conn in self._held:
            conn.close()


class ControlServer(UnixServer):
    """A fake Gunicorn control socket (length-prefixed JSON): a master at ``pid`` started at ``started``,
    listening on ``port``; every command it receives is kept in ``commands``, and ``reload`` is accepted."""

    def __init__(self, path: Path, *, pid: int, port: int, started: float, workers: tuple[int, ...] = (11, 12)) -> None:
        self.pid, self.port, self.started, self.workers = pid, port, started, workers
        self.commands: list[str] = []
        super().__init__(path)

    def _answer(self, command: str) -> dict[str, Any]:
        if command == "show stats":
            return {"pid": self.pid, "uptime": round(time.time() - self.started, 2), "reloads": 0}
        if command == "show workers":
            return {"workers": [{"pid": pid} for pid in self.workers]}
        if command == "show listeners":
            return {"listeners": [{"address": f"127.0.0.1:{self.port}", "type": "tcp"}]}
        return {}

    def handle(self, conn: socket.socket) -> None:
        """Answer one request as Gunicorn's control socket does."""
        with conn, contextlib.suppress(OSError, ValueError, struct.error):
            conn.settimeout(2)
            (length,) = struct.unpack(">I", conn.recv(4, socket.MSG_WAITALL))
            request = json.loads(conn.recv(length, socket.MSG_WAITALL))
            self.commands.append(request["command"])
            body = json.dumps({"id": request["id"], "status": "ok", "data": self._answer(request["command"])})
            conn.sendall(struct.pack(">I", len(body)) + body.encode())
