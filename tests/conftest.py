"""Shared fixtures: a certificate factory with explicit validity dates and real loopback TLS servers."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import shutil
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

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

    def ca(self, cn: str = "Test Root CA", **kwargs: object) -> Issued:
        return self.issue(cn, ca=True, not_after=kwargs.pop("not_after", NOW + 3650 * DAY), **kwargs)  # type: ignore[arg-type]

    def leaf(self, issuer: Issued, cn: str = "localhost", **kwargs: object) -> Issued:
        kwargs.setdefault("sans", ("localhost", "127.0.0.1", "::1"))
        return self.issue(cn, issuer=issuer, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def pki() -> PKI:
    return PKI()


@pytest.fixture(scope="session")
def root(pki: PKI) -> Issued:
    return pki.ca("Test Root CA")


@pytest.fixture(scope="session")
def intermediate(pki: PKI, root: Issued) -> Issued:
    return pki.issue("Test Intermediate CA", issuer=root, ca=True, not_after=NOW + 1000 * DAY)


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


@pytest.fixture
def tls_server() -> Iterator[type[TLSServer]]:
    """Start TLS servers that are closed at the end of the test."""
    servers: list[TLSServer] = []

    class Factory(TLSServer):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            servers.append(self)

    yield Factory
    for server in servers:
        server.close()


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@dataclass
class RunningExporter:
    """An exporter serving HTTP on loopback, with its scans run by hand or by its scheduler."""

    url: str
    service: object
    store: object
    server: object

    def get(self, path: str, **headers: str) -> tuple[int, bytes]:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(self.url + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def metrics(self) -> dict[str, float]:
        """Return every sample of /metrics as {'name{labels}': value}."""
        from prometheus_client.parser import text_string_to_metric_families

        status, body = self.get("/metrics")
        assert status == 200
        samples = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}"] = sample.value
        return samples


@pytest.fixture
def run_exporter(tmp_path: Path) -> Iterator[object]:
    """Start exporters from config text; scans run when the test calls ``service.scheduler.scans.run_all()``."""

    from gunicorn_cert_exporter import config, web, webconfig
    from gunicorn_cert_exporter.endpoints import Prober
    from gunicorn_cert_exporter.service import Service
    from gunicorn_cert_exporter.store import Store

    started: list[object] = []

    def start(
        text: str,
        *,
        users: dict[str, str] | None = None,
        tls: object = None,
        schedule: bool = False,
        prober: Prober | None = None,
    ) -> RunningExporter:
        path = tmp_path / f"config-{len(started)}.yaml"
        path.write_text(text)
        store = Store()
        service = Service(
            config=config.load_file(str(path)),
            load=lambda: config.load_file(str(path)),
            store=store,
            prober=prober or Prober(),
        )
        server = web.listen("127.0.0.1:0", app=service.app(), auth=webconfig.BasicAuth(users or {}), tls=tls)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        if schedule:
            service.scheduler.start()
        scheme = "https" if tls else "http"
        running = RunningExporter(f"{scheme}://127.0.0.1:{server.server_address[1]}", service, store, server)
        running.config_path = path  # type: ignore[attr-defined]
        started.append(running)
        return running

    yield start
    for running in started:
        running.server.shutdown()  # type: ignore[attr-defined]
        running.server.server_close()  # type: ignore[attr-defined]
        if getattr(running.service.scheduler._scheduler, "running", False):  # type: ignore[attr-defined]
            running.service.scheduler.shutdown()  # type: ignore[attr-defined]
