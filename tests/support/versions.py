"""The Gunicorn version suite: one pinned environment per version, cells, and a rotation under one cell."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from gunicorn_cert_exporter.sources.gunicorn import MasterIdentity, send_signal
from tests.support.exporter import start_exporter
from tests.support.gunicorn import Gunicorn
from tests.support.pki import PKI, Issued, write_pair
from tests.support.tools import REPO, unavailable
from tests.support.waiting import eventually, wait_until

# --- Gunicorn versions: one pinned environment per version (scripts/gunicorn-envs), the cells run on them ---

GUNICORN_PINS = REPO / "requirements" / "gunicorn"
GUNICORN_ENVS = REPO / ".venv-gunicorn"
WORKER_CLASSES = {  # the name a cell uses -> Gunicorn's -k
    "sync": "sync",
    "gthread": "gthread",
    "gevent": "gevent",
    "tornado": "tornado",
    "asgi": "asgi",
    "uvicorn": "uvicorn_worker.UvicornWorker",
    "eventlet": "eventlet",
}


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def gunicorn_versions() -> list[str]:
    """Return every Gunicorn version that has pins in requirements/gunicorn/, oldest first."""
    return sorted((path.stem for path in GUNICORN_PINS.glob("*.txt")), key=version_tuple)


def gunicorn_python(version: str) -> Path:
    """Return the Python of a version's environment; skip locally when it is not built, fail under CI."""
    python = GUNICORN_ENVS / version / "bin" / "python"
    if not python.exists():
        unavailable(
            f"no environment for Gunicorn {version}", ci_must="scripts/test builds it with scripts/gunicorn-envs"
        )
    return python


@dataclass(frozen=True)
class Cell:
    """One Gunicorn version with one worker class, as the version suite and docs/compatibility.md run it.

    ``channel`` is how the exporter proves and reloads the master: ``pidfile``, or (Gunicorn 25.1+)
    ``control_socket``, which starts Gunicorn with ``--control-socket`` and gives the target that socket instead of
    the pidfile.
    """

    version: str
    worker: str  # a key of WORKER_CLASSES
    setproctitle: bool = True
    channel: str = "pidfile"  # or "control_socket"

    @property
    def id(self) -> str:
        return (
            f"{self.version}-{self.worker}"
            + ("" if self.setproctitle else "-no-setproctitle")
            + ("" if self.channel == "pidfile" else f"-{self.channel}")
        )

    @property
    def unsupported(self) -> str | None:
        """Why this version cannot run this class, or None."""
        if self.worker == "asgi" and version_tuple(self.version) < (24, 0):
            return "no native asgi worker before 24.0"
        if self.worker == "eventlet" and version_tuple(self.version) >= (26, 0):
            return "eventlet worker removed in 26.0"
        if self.worker == "eventlet" and version_tuple(self.version) < (21, 0):
            # 20.1 imports eventlet.wsgi.ALREADY_HANDLED, gone in eventlet 0.30.3; older eventlet fails to import
            # on Python 3.10+ (socket.timeout became the immutable TimeoutError).
            return "20.1's eventlet worker needs eventlet < 0.30.3, which Python 3.10+ cannot import"
        if self.channel == "control_socket" and version_tuple(self.version) < (25, 1):
            return "no control socket before 25.1"
        return None

    @property
    def reads_per_connection(self) -> bool:
        """Tell whether this class reads the cert on every connection here (no drift, no HUP needed)."""
        if self.worker in ("sync", "gthread", "eventlet"):
            return True
        # 20.1 hands certfile/keyfile to gevent and tornado (as an options dict) for each connection; from 21.0
        # both build one SSLContext per worker.
        return self.worker in ("gevent", "tornado") and version_tuple(self.version) < (21, 0)

    @property
    def args(self) -> tuple[str, ...]:
        """Return the Gunicorn arguments this cell needs besides the common ones."""
        if self.worker == "tornado" and version_tuple(self.version) < (21, 0):
            # 20.1 passes ca_certs=None and ciphers=None to Tornado 6, which then fails every handshake.
            return ("--ca-certs", "{ca}", "--ciphers", "ECDHE+AESGCM:ECDHE+CHACHA20")
        return ()

    @property
    def pins(self) -> list[str]:
        """Return the exact distributions of this version's environment (its pins file, comments dropped)."""
        text = (GUNICORN_PINS / f"{self.version}.txt").read_text()
        return [line for line in text.splitlines() if line and not line.startswith("#")]


@dataclass(frozen=True)
class Rotation:
    """What the exporter showed, and what was served, when a cert/key pair was rotated under one cell."""

    master_up: float
    workers: float
    drift_after_rotation: float  # gunicorn_cert_fingerprint_mismatch on the scan right after the rotation
    drift_after_reload: float  # ... on the scan after reload.after had passed
    signals: tuple[int, ...]  # the signals the exporter sent, in order
    reload_signals_total: float
    reload_failures_total: float
    last_reload_moved: bool
    new_leaf_served: bool
    seconds_to_new_leaf: float  # rotation -> first handshake that served the new leaf
    seconds_signal_to_new_leaf: float | None  # SIGHUP -> first handshake that served the new leaf
    seconds_signal_to_confirmed: float | None  # SIGHUP -> the exporter confirmed (every old worker gone)
    seconds_per_handshake: float  # the median handshake while watching for the new leaf


def _served_leaf(port: int) -> bytes | None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock, context.wrap_socket(sock) as tls:
        return tls.getpeercert(binary_form=True)


class _LeafWatch:
    """Handshake with a port every few milliseconds in a thread; note when ``leaf`` is first served."""

    def __init__(self, port: int, leaf: bytes) -> None:
        self.port, self.leaf = port, leaf
        self.handshakes: list[float] = []  # how long each handshake took: what a time to the new leaf can resolve
        self.seen_at: float | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stop = threading.Event()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and self.seen_at is None:
            started = time.monotonic()
            with contextlib.suppress(OSError):
                if _served_leaf(self.port) == self.leaf:
                    self.seen_at = time.monotonic()
                self.handshakes.append(time.monotonic() - started)
            self._stop.wait(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def rotate_under(cell: Cell, directory: Path, *, pki: PKI, root: Issued) -> Rotation:
    """Serve TLS from ``cell``'s Gunicorn, watch it with the exporter (reload on), rotate the pair atomically.

    The exporter scans right after the rotation (drift or not), again once ``reload.after`` (1 s) has passed
    (a HUP where the class needs one, confirmed by the exporter), and once more (no second HUP).
    """
    cert, key, ca = directory / "cert.pem", directory / "key.pem", directory / "ca.pem"
    write_pair(pki.leaf(root), cert, key)
    ca.write_bytes(root.cert_pem)
    env = {}
    if not cell.setproctitle:
        hide = directory / "no-setproctitle"
        hide.mkdir()
        (hide / "setproctitle.py").write_text("raise ImportError('hidden: this cell runs without setproctitle')\n")
        env["PYTHONPATH"] = f"{hide}{os.pathsep}{REPO}"
    args = [arg.format(ca=ca) for arg in cell.args]
    control_socket = directory / "gunicorn.ctl"
    if cell.channel == "control_socket":
        args += ["--control-socket", str(control_socket)]
    server = Gunicorn(
        directory,
        worker_class=WORKER_CLASSES[cell.worker],
        cert=cert,
        key=key,
        python=gunicorn_python(cell.version),
        args=args,
        env=env,
    )
    master = f"control_socket: {control_socket}" if cell.channel == "control_socket" else f"pidfile: {server.pidfile}"
    sent: list[tuple[float, int]] = []

    def sender(identity: MasterIdentity, signum: int) -> None:
        sent.append((time.monotonic(), signum))
        send_signal(identity, signum)

    config_path = directory / "exporter.yaml"
    config_path.write_text(
        f"gunicorn: [{{name: app, cert_file: {cert}, key_file: {key}, endpoint: '{server.address}', "
        f"server_name: localhost, ca_file: {ca}, {master}, "
        "reload: {enabled: true, after: 1s, cooldown: 10m, max_per_hour: 2, verify_timeout: 30s}}]\n"
    )
    exporter = start_exporter(config_path, sender=sender)
    watch: _LeafWatch | None = None
    try:
        exporter.scan_now()
        before = exporter.metrics()
        new = pki.leaf(root)
        watch = _LeafWatch(server.port, new.cert.public_bytes(serialization.Encoding.DER))
        rotated_at = time.monotonic()
        write_pair(new, cert, key)
        exporter.scan_now()
        drift_seen_by = time.time()  # the scan that first saw the drift ended by now
        drifting = exporter.metrics()
        wait_until(drift_seen_by + 1.0, "reload.after (1 s) of drift")  # the exporter's clock is time.time
        exporter.scan_now()
        confirmed_at = time.monotonic()
        reloaded = exporter.metrics()
        eventually(lambda: watch is not None and watch.seen_at is not None, "the new leaf served", timeout=30)
        exporter.scan_now()
        after = exporter.metrics()
    finally:
        if watch is not None:
            watch.stop()
        exporter.close()
        server.stop()
    target, drift = '{target="app"}', '{address="127.0.0.1",target="app"}'
    seen_at = watch.seen_at
    signal_at = sent[0][0] if sent else None
    return Rotation(
        master_up=after["gunicorn_cert_master_up" + target],
        workers=after["gunicorn_cert_master_workers" + target],
        drift_after_rotation=drifting["gunicorn_cert_fingerprint_mismatch" + drift],
        drift_after_reload=reloaded["gunicorn_cert_fingerprint_mismatch" + drift],
        signals=tuple(signum for _, signum in sent),
        reload_signals_total=after["gunicorn_cert_reload_signals_total" + target],
        reload_failures_total=after["gunicorn_cert_reload_failures_total" + target],
        last_reload_moved=after["gunicorn_cert_last_reload_timestamp_seconds" + target]
        > before["gunicorn_cert_last_reload_timestamp_seconds" + target],
        new_leaf_served=seen_at is not None,
        seconds_to_new_leaf=(seen_at or time.monotonic()) - rotated_at,
        seconds_signal_to_new_leaf=None if signal_at is None or seen_at is None else seen_at - signal_at,
        seconds_signal_to_confirmed=None if signal_at is None else confirmed_at - signal_at,
        seconds_per_handshake=statistics.median(watch.handshakes or [0.0]),
    )
