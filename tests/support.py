"""Test helpers: certificates with explicit validity dates, loopback TLS servers, real Gunicorn, a running exporter."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import ipaddress
import json
import os
import select
import shutil
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gunicorn_cert_exporter import config
from gunicorn_cert_exporter.model import FileReason
from gunicorn_cert_exporter.scanning.store import Store
from gunicorn_cert_exporter.service import Service
from gunicorn_cert_exporter.sources import globs
from gunicorn_cert_exporter.sources.endpoints import Prober
from gunicorn_cert_exporter.sources.files import FileScanner
from gunicorn_cert_exporter.sources.gunicorn import MasterIdentity, SignalSender, send_signal
from gunicorn_cert_exporter.web import server as web
from gunicorn_cert_exporter.web.connections import Limits
from gunicorn_cert_exporter.web.server import WebServer
from gunicorn_cert_exporter.web.webconfig import BasicAuth, ReloadingContext

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
DAY = dt.timedelta(days=1)


def eventually(check: Callable[[], T | None], what: str, timeout: float = 60.0, every: float = 0.2) -> T:
    """Poll ``check`` until it returns something truthy (OSError counts as not yet); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def as_nobody(work: Callable[[], str]) -> str:
    """Run ``work`` in a forked child that dropped to uid/gid nobody (when run as root); return what it returned."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover  (the child)
        try:
            if os.getuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            try:
                os.write(write_fd, work().encode())
            except BaseException as exc:
                os.write(write_fd, f"child failed: {exc!r}".encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    with os.fdopen(read_fd, "rb") as pipe:
        return pipe.read().decode()


def deep_tree(base: Path, levels: int, files: dict[int, bytes]) -> None:
    """Make ``base/d/d/...`` ``levels`` deep without recursion, with ``c.pem`` holding ``files[level]`` there."""
    path = str(base)
    os.mkdir(path)
    for level in range(1, levels + 1):
        path += "/d"
        os.mkdir(path)
        if level in files:
            with open(path + "/c.pem", "wb") as handle:
                handle.write(files[level])


def remove_tree(base: Path) -> None:
    """Remove a tree of any depth without recursion (shutil.rmtree recurses, and so does pytest's cleanup)."""
    stack, directories = [str(base)], []
    while stack:
        directory = stack.pop()
        directories.append(directory)
        for entry in os.scandir(directory):
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            else:
                os.unlink(entry.path)
    for directory in reversed(directories):
        os.rmdir(directory)


def unavailable(what: str, *, ci_must: str) -> NoReturn:
    """Skip a test whose prerequisite is missing locally; fail it under CI, which must provide it."""
    if os.environ.get("CI"):
        pytest.fail(f"{what}; {ci_must}")
    pytest.skip(what)


def require_tool(name: str) -> str:
    """Return a tool's path; skip locally when missing, fail under CI (CI must install it)."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed", ci_must=".ci/run must install it")
    return path


@dataclass(frozen=True)
class Issued:
    """A certificate with its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def fingerprint(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()


def _new_key(key_type: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


class PKI:
    """Issue CAs, intermediates and leaves with explicit notBefore/notAfter."""

    def issue(
        self,
        cn: str,
        *,
        issuer: Issued | None = None,
        ca: bool = False,
        sans: tuple[str, ...] = (),
        not_before: dt.datetime = NOW - DAY,
        not_after: dt.datetime = NOW + 90 * DAY,
        key_type: str = "ecdsa",
        ca_issuers: str | None = None,
    ) -> Issued:
        key = _new_key(key_type)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer.cert.subject if issuer else name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        if sans:
            names: list[x509.GeneralName] = []
            for san in sans:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(san)))
                except ValueError:
                    names.append(x509.DNSName(san))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        if ca_issuers:
            builder = builder.add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            x509.oid.AuthorityInformationAccessOID.CA_ISSUERS,
                            x509.UniformResourceIdentifier(ca_issuers),
                        )
                    ]
                ),
                critical=False,
            )
        signer = issuer.key if issuer else key
        algorithm = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
        return Issued(builder.sign(signer, algorithm), key)

    def ca(
        self, cn: str = "Test Root CA", *, not_after: dt.datetime = NOW + 3650 * DAY, key_type: str = "ecdsa"
    ) -> Issued:
        return self.issue(cn, ca=True, not_after=not_after, key_type=key_type)

    def leaf(
        self,
        issuer: Issued,
        cn: str = "localhost",
        *,
        sans: tuple[str, ...] = ("localhost", "127.0.0.1", "::1"),
        not_before: dt.datetime = NOW - DAY,
        not_after: dt.datetime = NOW + 90 * DAY,
        key_type: str = "ecdsa",
        ca_issuers: str | None = None,
    ) -> Issued:
        return self.issue(
            cn,
            issuer=issuer,
            sans=sans,
            not_before=not_before,
            not_after=not_after,
            key_type=key_type,
            ca_issuers=ca_issuers,
        )


def write_pair(issued: Issued, cert_path: Path, key_path: Path) -> None:
    """Write a cert/key pair the way a careful renewer does: the key, then the cert, each renamed into place."""
    for path, data in ((key_path, issued.key_pem), (cert_path, issued.cert_pem)):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)


def write_chain(directory: Path, name: str, *certs: Issued, key: Issued | None = None) -> tuple[Path, Path]:
    """Write a PEM chain and the key of its first cert (or of ``key``)."""
    cert_path = directory / f"{name}.pem"
    key_path = directory / f"{name}.key"
    cert_path.write_bytes(b"".join(c.cert_pem for c in certs))
    key_path.write_bytes((key or certs[0]).key_pem)
    return cert_path, key_path


_HOUR = dt.timedelta(hours=1)
# The lifetimes of issue 28. Name: (lifetime, time left, the state `check` gives with the default bands).
LIFETIMES = {
    "160h-issued-an-hour-ago": (160 * _HOUR, 159 * _HOUR, "OK"),
    "160h-30h-left": (160 * _HOUR, 30 * _HOUR, "WARNING"),
    "160h-15h-left": (160 * _HOUR, 15 * _HOUR, "CRITICAL"),
    "45d-25-left": (45 * DAY, 25 * DAY, "OK"),
    "45d-10-left": (45 * DAY, 10 * DAY, "WARNING"),
    "90d-25-left": (90 * DAY, 25 * DAY, "OK"),
    "90d-20-left": (90 * DAY, 20 * DAY, "WARNING"),
    "398d-27-left": (398 * DAY, 27 * DAY, "WARNING"),
    "398d-6-left": (398 * DAY, 6 * DAY, "CRITICAL"),
}


def lifetime_files(directory: Path, pki: PKI, root: Issued) -> None:
    """One leaf per LIFETIMES entry, in ``<name>.pem``."""
    for name, (lifetime, left, _) in LIFETIMES.items():
        leaf = pki.leaf(root, name, not_before=NOW + left - lifetime, not_after=NOW + left)
        (directory / f"{name}.pem").write_bytes(leaf.cert_pem)


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
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            if self.mode == "stall":
                self._held.append(conn)  # accept and never answer
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

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
        for conn in self._held:
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


def parse_samples(exposition: str) -> dict[str, float]:
    """Return every sample of an exposition as {'name{labels}': value}, labels sorted."""
    samples = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Stop a child gracefully (SIGTERM), then SIGKILL after 15 s; nothing if it already exited."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class RunningExporter:
    """An exporter serving HTTP on loopback, with its scans run by hand (``scan_now``) or by its scheduler."""

    url: str
    service: Service
    server: WebServer
    config_path: Path

    @property
    def port(self) -> int:
        """Return the port the exporter listens on."""
        return self.server.addresses[0][1]

    def scan_now(self) -> None:
        """Run every scan once and publish it."""
        self.service.scan_now()

    def get(self, path: str, **headers: str) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def metrics(self) -> dict[str, float]:
        """Return every sample of /metrics as {'name{labels}': value}."""
        status, body = self.get("/metrics")
        assert status == 200
        return parse_samples(body.decode())

    def close(self) -> None:
        """Stop serving and scheduling."""
        self.server.stop()
        self.service.stop()


def start_exporter(
    config_path: Path,
    *,
    users: dict[str, str] | None = None,
    tls: ReloadingContext | None = None,
    schedule: bool = False,
    prober: Prober | None = None,
    sender: SignalSender = send_signal,
    limits: Limits | None = None,
    live: CollectorRegistry | None = None,
) -> RunningExporter:
    """Serve the config at ``config_path`` on a free loopback port, as ``serve`` wires it."""
    service = Service(
        config=config.load_file(str(config_path)),
        load=lambda: config.load_file(str(config_path)),
        store=Store(),
        prober=prober or Prober(),
        sender=sender,
    )
    app = web.app_for(service, live=live)
    server = web.serve_in_background(
        app, addresses=["127.0.0.1:0"], auth=BasicAuth(users or {}), tls=tls, limits=limits
    )
    if schedule:
        service.start()
    scheme = "https" if tls else "http"
    return RunningExporter(f"{scheme}://127.0.0.1:{server.addresses[0][1]}", service, server, config_path)


def proc_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name: state first, then ppid, ... (raises OSError if gone)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """Tell whether ``pid`` runs (a zombie does not)."""
    try:
        return proc_stat(pid)[0] != "Z"
    except OSError:
        return False


def children(pid: int) -> list[int]:
    """The live child processes of ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = proc_stat(int(entry))
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
            time.sleep(0.1)
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

    def stop(self) -> None:
        """Stop Gunicorn and its workers."""
        stop_process(self.process)


StartExporter = Callable[..., RunningExporter]
"""The ``run_exporter`` fixture: config text and start_exporter's keywords to a running exporter."""


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
        drifting = exporter.metrics()
        time.sleep(1.2)  # reload.after
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


CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
]  # fmt: skip


class Chromium:
    """A headless Chromium driven over the DevTools protocol on a pipe (its fds 3 and 4): stdlib only."""

    def __init__(self, profile: Path, *, timeout: float = 60.0) -> None:
        self.timeout = timeout
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()
        # Chromium reads commands on fd 3 and answers on fd 4; bash puts the pipes there (dash takes 1-digit fds only).
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser, from_browser)]
        for fd in (to_browser, from_browser):
            os.close(fd)
        command = [
            require_tool("chromium"),
            *CHROMIUM_FLAGS,
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            "about:blank",
        ]
        wrapper = ["/bin/bash", "-c", f'exec "$0" "$@" 3<&{ends[0]} 4>&{ends[1]}', *command]
        self.process = subprocess.Popen(wrapper, pass_fds=ends, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in ends:
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.page("Page.enable")

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise AssertionError("Chromium did not answer in time")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise AssertionError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def send(self, method: str, *, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events seen meanwhile are kept)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._message(deadline)
            if answer.get("id") != self._next_id:
                self.events.append(answer)
                continue
            if "error" in answer:
                raise AssertionError(f"{method}: {answer['error']}")
            result: dict[str, Any] = answer["result"]
            return result

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command to the page's session."""
        return self.send(method, session=self.session, **params)

    def open(self, url: str, *, width: int, height: int, javascript: bool = True) -> None:
        """Load ``url`` in a window of this size (a phone width emulates a mobile viewport) and wait for it."""
        self.page("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=width < 600)  # fmt: skip
        self.page("Emulation.setScriptExecutionDisabled", value=not javascript)
        self.events.clear()
        self.page("Page.navigate", url=url)
        deadline = time.monotonic() + self.timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._message(deadline))

    def evaluate(self, expression: str) -> Any:
        """Evaluate JavaScript in the page (DevTools may, even when the page's own scripts are disabled)."""
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def click(self, selector: str) -> None:
        """Click the middle of the first element matching ``selector`` with a real mouse event."""
        root = self.page("DOM.getDocument")["root"]["nodeId"]
        node = self.page("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        assert node, f"no element matches {selector!r}"
        self.page("DOM.scrollIntoViewIfNeeded", nodeId=node)
        quad = self.page("DOM.getBoxModel", nodeId=node)["model"]["content"]
        x, y = (quad[0] + quad[4]) / 2, (quad[1] + quad[5]) / 2
        for kind in ("mousePressed", "mouseReleased"):
            self.page("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def type(self, selector: str, text: str) -> None:
        """Focus an input with a click and type into it, as a user does."""
        self.click(selector)
        self.page("Input.insertText", text=text)

    def screenshot(self, path: Path) -> bytes:
        """Save what the window shows as a PNG."""
        data = base64.b64decode(self.page("Page.captureScreenshot", format="png")["data"])
        path.write_bytes(data)
        return data

    def close(self) -> None:
        """Stop the browser."""
        with contextlib.suppress(OSError):
            os.close(self._write)
        os.close(self._read)
        stop_process(self.process)


def scan_paths(
    *paths: Path | str,
    max_size: int = 1 << 20,
    exclude: list[str] | None = None,
    password_file: str | None = None,
    password_env: str | None = None,
) -> dict[str, tuple[FileReason | None, int]]:
    """Expand ``paths`` as one files source and scan them once: {path: (reason, number of certificates)}."""
    source = config.FileSource(
        paths=[str(p) for p in paths],
        exclude=[] if exclude is None else exclude,
        password_file=password_file,
        password_env=password_env,
    )
    wanted, _ = globs.expand([source])
    results = FileScanner(clock=time.time, max_size=max_size).scan(wanted)
    return {r.path: (r.error, len(r.certs)) for r in results}


def pkcs12_of(leaf: Issued, password: bytes) -> bytes:
    """Return a PKCS#12 holding ``leaf`` and its key, encrypted with ``password``."""
    return pkcs12.serialize_key_and_certificates(
        b"x", leaf.key, leaf.cert, None, serialization.BestAvailableEncryption(password)
    )


class ExporterProcess:
    """A real ``gunicorn-cert-exporter serve`` process on a free loopback port, as an operator runs it."""

    def __init__(
        self,
        config_path: Path,
        *,
        cwd: Path,
        storage: Path | None = None,
        log: Path | None = None,
        prefix: tuple[str, ...] = (),
    ) -> None:
        """Start it; ``prefix`` runs it under another command (e.g. ``unshare --pid --fork --mount-proc``)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable, "-m", "gunicorn_cert_exporter", "serve", "--config", str(config_path),
            "--web.listen-address", f"127.0.0.1:{self.port}", "--log.level", "debug",
        ]  # fmt: skip
        if storage is not None:
            command += ["--storage.path", str(storage)]
        self.log = log or cwd / f"exporter-{self.port}.log"
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen([*prefix, *command], stdout=out, stderr=subprocess.STDOUT, cwd=cwd)

    def metrics(self) -> dict[str, float]:
        """Return every sample of /metrics as {'name{labels}': value} (raises OSError while it is not up)."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            body = response.read().decode()
        return parse_samples(body)

    def kill(self) -> None:
        """Kill it with SIGKILL (a crash: nothing is flushed, nothing cleaned up)."""
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """Stop it if it still runs."""
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
        self.sock.settimeout(0.2)
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
            time.sleep(self._delay)
            with contextlib.suppress(OSError):
                conn.sendall(self._reply)

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
