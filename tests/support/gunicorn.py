"""Gunicorn as a child process: the real one, and a fake that only looks like it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from tests.support.processes import free_port, stop_process
from tests.support.tools import REPO
from tests.support.waiting import eventually, wait_until


class Gunicorn:
    """A real Gunicorn serving TLS on loopback, started as a child process."""

    def __init__(
        self,
        directory: Path,
        *,
        worker_class: str,
        cert: Path,
        key: Path,
        workers: int = 2,
        env: dict[str, str] | None = None,
        python: Path = Path(sys.executable),
        args: Sequence[str] = (),
        console_script: bool = False,
        pidfile: bool = True,
    ) -> None:
        """Start ``python -m gunicorn`` (or its console script, ``python .../bin/gunicorn``) with ``args`` added.

        Another environment's ``python`` runs another Gunicorn version.
        """
        self.port = free_port()
        self.workers = workers
        self.pidfile = directory / "gunicorn.pid"
        self.log = directory / "gunicorn.log"
        is_asgi = worker_class == "asgi" or "uvicorn" in worker_class.lower()
        app = "gunicorn_cert_exporter.demo_app:" + ("asgi_app" if is_asgi else "wsgi_app")
        launcher = [str(python), str(python.parent / "gunicorn")] if console_script else [str(python), "-m", "gunicorn"]
        command = [
            *launcher, "-k", worker_class, "-w", str(workers),
            "--certfile", str(cert), "--keyfile", str(key), "-b", f"127.0.0.1:{self.port}",
            *(("--pid", str(self.pidfile)) if pidfile else ()), "--graceful-timeout", "5", *args, app,
        ]  # fmt: skip
        self.has_pidfile = pidfile
        # The app module imports nothing of the exporter, so a Gunicorn environment without it finds it here.
        environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=directory, env=environment
            )
        self._wait_ready()

    @property
    def address(self) -> str:
        """Return host:port."""
        return f"127.0.0.1:{self.port}"

    def _wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until every worker has booted and a TLS handshake completes.

        The listening socket accepts before any worker exists, so a connection proves nothing; a worker still
        booting while the cert/key pair is rotated would load half of it and be replaced.
        """
        deadline = time.monotonic() + timeout
        first_seen: dict[int, float] = {}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log.read_text()[-2000:]}")
            now = time.monotonic()
            children = [c.pid for c in psutil.Process(self.process.pid).children()]
            for pid in children:
                first_seen.setdefault(pid, now)
            settled = len(children) >= self.workers and all(now - first_seen[pid] >= 1.0 for pid in children)
            if settled and (self.pidfile.exists() or not self.has_pidfile) and self._handshake():
                return
            time.sleep(0.1)  # a poll of the conditions above (with their own state), not a wait for time
        raise RuntimeError(f"gunicorn not ready after {timeout}s: {self.log.read_text()[-2000:]}")

    def _handshake(self) -> bool:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            with (
                socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock,
                context.wrap_socket(sock) as tls,
            ):
                return tls.version() is not None
        except OSError:
            return False

    def signals_handled(self) -> list[str]:
        """Return the signals the master logged handling, in order (``hup``, ``ttin``, ...)."""
        return re.findall(r"Handling signal: (\w+)", self.log.read_text())

    def barrier(self) -> None:
        """Send SIGTTIN (one more worker) and wait until the master handled it.

        The master queues its signals and handles them in order (and Python runs pending handlers lowest number
        first, SIGHUP before SIGTTIN), so every signal sent before has been handled, and logged, by then: what
        a "nothing was signalled" test needs to know before it looks.
        """
        before = self.signals_handled().count("ttin")
        os.kill(self.process.pid, signal.SIGTTIN)
        eventually(lambda: self.signals_handled().count("ttin") > before, "the master to handle SIGTTIN", timeout=30)

    def stop(self) -> None:
        """Stop Gunicorn and its workers."""
        stop_process(self.process)


FAKE_GUNICORN = """
import os, socket, ssl, sys, time
cert, key, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", port))
sock.listen(16)
if FORK:
    os.fork()  # a "worker" holding the same listening socket, with the same command line
while True:
    conn, _ = sock.accept()
    try:
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.settimeout(2)
            tls.recv(1)
    except OSError:
        pass
"""


class FakeGunicorn:
    """A plain Python TLS server that merely looks like Gunicorn: a script named ``gunicorn``, or ``-m gunicorn``.

    It has no SIGHUP handler, so a HUP kills it (what the exporter must never cause).
    """

    def __init__(self, directory: Path, *, cert: Path, key: Path, form: str) -> None:
        self.port = free_port()
        fork = form == "script"
        source = FAKE_GUNICORN.replace("FORK", str(fork))
        if form == "script":
            script = directory / "fake" / "gunicorn"
            script.parent.mkdir()
            script.write_text(source)
            command = [sys.executable, str(script)]
        else:  # a module named gunicorn in the working directory shadows the real one for `python -m gunicorn`
            (directory / "gunicorn").mkdir()
            (directory / "gunicorn" / "__init__.py").write_text("")
            (directory / "gunicorn" / "__main__.py").write_text(source)
            command = [sys.executable, "-m", "gunicorn"]
        self.process = subprocess.Popen(
            [*command, str(cert), str(key), str(self.port)], cwd=directory, start_new_session=True
        )
        self.pidfile = directory / "fake.pid"
        self.pidfile.write_text(f"{self.process.pid}\n")
        eventually(self._listening, "the fake gunicorn to listen", timeout=30)

    @property
    def address(self) -> str:
        """Return host:port."""
        return f"127.0.0.1:{self.port}"

    def _listening(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2):
            return True

    def alive(self) -> bool:
        """Tell whether every process of the fake still runs (a HUP would have killed it)."""
        procs = [psutil.Process(self.process.pid), *psutil.Process(self.process.pid).children()]
        return self.process.poll() is None and all(p.status() != psutil.STATUS_ZOMBIE for p in procs)

    def stop(self) -> None:
        """Kill the fake and its child."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, 9)
        self.process.wait(timeout=10)


START_SLACK = 1.1
"""Process start times come from /proc with a whole-second boot time: "started after" needs a second and a bit."""


def newest_start(pid: int) -> float:
    """Return when the newest of ``pid`` and its children started (as the exporter reads start times)."""
    process = psutil.Process(pid)
    return max(p.create_time() for p in [process, *process.children()])


def after_start_of(pid: int) -> None:
    """Wait until a change made now is provably newer than ``pid`` and its children (a renewal after the workers
    started, as in real life)."""
    wait_until(newest_start(pid) + START_SLACK, f"the clock past the start of {pid} and its children")
