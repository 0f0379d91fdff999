"""Test helpers: certificates with explicit validity dates, loopback TLS servers, real Gunicorn, a running exporter."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gunicorn_cert_exporter import config
from gunicorn_cert_exporter.scanning.store import Store
from gunicorn_cert_exporter.service import Service
from gunicorn_cert_exporter.sources.endpoints import Prober
from gunicorn_cert_exporter.sources.gunicorn import SignalSender, send_signal
from gunicorn_cert_exporter.web import server as web
from gunicorn_cert_exporter.web.connections import Limits
from gunicorn_cert_exporter.web.server import WebServer
from gunicorn_cert_exporter.web.webconfig import BasicAuth, ReloadingContext

T = TypeVar("T")
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


def require_tool(name: str) -> str:
    """Return a tool's path; skip locally when missing, fail under CI (CI must install it)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; .ci/run must install it")
        pytest.skip(f"{name} not installed")
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
        samples = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}"] = sample.value
        return samples

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
    ) -> None:
        self.port = free_port()
        self.workers = workers
        self.pidfile = directory / "gunicorn.pid"
        self.log = directory / "gunicorn.log"
        is_asgi = worker_class == "asgi" or "uvicorn" in worker_class.lower()
        app = "gunicorn_cert_exporter.demo_app:" + ("asgi_app" if is_asgi else "wsgi_app")
        command = [
            sys.executable, "-m", "gunicorn", "-k", worker_class, "-w", str(workers),
            "--certfile", str(cert), "--keyfile", str(key), "-b", f"127.0.0.1:{self.port}",
            "--pid", str(self.pidfile), "--graceful-timeout", "5", app,
        ]  # fmt: skip
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=directory, env={**os.environ, **(env or {})}
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
            if settled and self.pidfile.exists() and self._handshake():
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
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


StartExporter = Callable[..., RunningExporter]
"""The ``run_exporter`` fixture: config text and start_exporter's keywords to a running exporter."""
