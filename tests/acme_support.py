"""Test helpers for ARI (RFC 9773): leaves with an authority key identifier, and a small ACME server on loopback.

No ARI-capable ACME server is packaged for this machine (Debian's pebble 2.4.0 predates ARI), so ``AcmeServer``
serves what RFC 9773 defines: the directory with its ``renewalInfo`` URL, and a renewalInfo resource per certID,
with Retry-After and windows that a test may move.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gunicorn_cert_exporter import config as config_mod
from gunicorn_cert_exporter import status
from gunicorn_cert_exporter.model import Snapshot
from gunicorn_cert_exporter.scanning.store import Store
from gunicorn_cert_exporter.service import Service
from gunicorn_cert_exporter.sources.ari import cert_id
from gunicorn_cert_exporter.sources.endpoints import Prober
from tests.support import Issued, serve_in_thread

DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)
EXPLANATION = "https://ca.test/incidents/2026-12-07"


def acme_leaf(issuer: Issued, *, lifetime: dt.timedelta, left: dt.timedelta, cn: str = "acme.test") -> Issued:
    """Issue a leaf with an AKI (as every ACME CA does) of ``lifetime``, ``left`` of which is still ahead."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    key = ec.generate_private_key(ec.SECP256R1())
    assert isinstance(issuer.key, ec.EllipticCurvePrivateKey)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + left - lifetime)
        .not_valid_after(now + left)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(cn), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(issuer.key, hashes.SHA256())
    )
    return Issued(cert, key)


def id_of(leaf: Issued) -> str:
    """Return the leaf's RFC 9773 certID."""
    aki = leaf.cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    assert aki is not None
    return cert_id(key_identifier=aki, serial=leaf.cert.serial_number)


def rfc3339(instant: dt.datetime) -> str:
    """Write an instant as RFC 3339 in UTC, as ACME servers do."""
    return instant.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Reply:
    """What the server answers for one certID: a window, or an error status with a Retry-After."""

    start: dt.datetime | None = None
    end: dt.datetime | None = None
    explanation_url: str = ""
    status: int = 200
    retry_after: int | None = None


@dataclass
class _State:
    replies: dict[str, Reply] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    connections: int = 0
    hold: threading.Event | None = None  # set: answers wait until the test releases them
    held: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""

    def do_GET(self) -> None:
        state = self.server.state
        with state.lock:
            state.requests.append(self.path)
            hold = state.hold
            if hold is not None:
                state.held += 1
        if hold is not None:
            hold.wait(300)
        base = self.server.base
        if self.path == "/directory":
            self._json(200, {"newNonce": f"{base}/nonce", "renewalInfo": f"{base}/renewal-info"})
            return
        identity = self.path.removeprefix("/renewal-info/")
        reply = state.replies.get(identity)
        if reply is None:
            self._json(404, {"type": "urn:ietf:params:acme:error:malformed"})
            return
        if reply.status != 200 or reply.start is None or reply.end is None:
            self._json(reply.status, {"type": "urn:ietf:params:acme:error:serverInternal"}, reply.retry_after)
            return
        body: dict[str, object] = {"suggestedWindow": {"start": rfc3339(reply.start), "end": rfc3339(reply.end)}}
        if reply.explanation_url:
            body["explanationURL"] = reply.explanation_url
        self._json(200, body, reply.retry_after)

    def _json(self, status: int, body: object, retry_after: int | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str) -> None:
        self.state = _State()
        super().__init__((host, 0), _Handler)

    @property
    def base(self) -> str:
        host, port = self.socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def verify_request(self, request: object, client_address: object) -> bool:
        """Count every connection accepted (called once per connection, before its first request)."""
        with self.state.lock:
            self.state.connections += 1
        return True


class AcmeServer:
    """An RFC 9773 directory and renewalInfo resource on a loopback address, served from a thread."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._server = _Server(host)
        self._thread = serve_in_thread(self._server)

    @property
    def state(self) -> _State:
        """Return what the server answers and what it saw."""
        return self._server.state

    @property
    def directory(self) -> str:
        """Return the directory URL."""
        return f"{self._server.base}/directory"

    def answer(self, leaf: Issued, reply: Reply) -> None:
        """Answer ``reply`` for the leaf's certID from now on."""
        with self.state.lock:
            self.state.replies[id_of(leaf)] = reply

    def asked(self, leaf: Issued) -> int:
        """Return how many times the leaf's window was asked."""
        with self.state.lock:
            return self.state.requests.count(f"/renewal-info/{id_of(leaf)}")

    def close(self) -> None:
        """Stop serving (releasing any held answer)."""
        if self.state.hold is not None:
            self.state.hold.set()
        self._server.shutdown()
        self._server.server_close()


def certbot_lineage(
    config_dir: Path, name: str, leaf: Issued, issuer: Issued, *, server: str, renew_before: str | None = None
) -> Path:
    """Have certbot (from PyPI) write a lineage as after ``certbot certonly``: no ACME server needed for that part.

    certbot lays out archive/NAME/cert1.pem, live/NAME/cert.pem -> ../../archive/NAME/cert1.pem and
    renewal/NAME.conf (with ``server`` under [renewalparams]); ``renew_before`` is set in that file through
    certbot's own configobj, as a user edits it. Returns the lineage's live cert.pem.
    """
    from certbot._internal import cli, storage
    from certbot._internal.plugins import disco

    args = ["certonly", "--standalone", "-d", name, "--server", server]
    for option, directory in (
        ("--config-dir", config_dir),
        ("--work-dir", config_dir / "work"),
        ("--logs-dir", config_dir / "logs"),
    ):
        directory.mkdir(parents=True, exist_ok=True)
        args += [option, str(directory)]
    config = cli.prepare_and_parse_args(disco.PluginsRegistry.find_all(), args)
    lineage = storage.RenewableCert.new_lineage(name, leaf.cert_pem, leaf.key_pem, issuer.cert_pem, config)
    if renew_before is not None:
        lineage.configfile["renew_before_expiry"] = renew_before
        lineage.configfile.write()
    return Path(lineage.cert_path)


def utc_now() -> dt.datetime:
    """Return now, in UTC."""
    return dt.datetime.now(dt.timezone.utc)


def ari_config(
    tmp_path: Path,
    files: dict[str, str],
    *,
    certbot: Path | None = None,
    allow: str = "127.0.0.1",
    timeout: str = "10s",
    interval: str = "5s",
) -> Path:
    """Write a config: each file with its ACME directory, ARI on with an ``interval`` (5 s unless told)."""
    entries = "".join(
        f"  - paths: [{json.dumps(p)}]\n    acme: {{directory: {json.dumps(d)}}}\n" for p, d in files.items()
    )
    text = (
        "scan: {interval: 1s}\n"
        + (f"files:\n{entries}" if files else "")
        + "acme:\n"
        + f"  certbot_config_dir: {json.dumps(str(certbot or tmp_path / 'no-certbot'))}\n"
        + f"  ari: {{enabled: true, interval: {interval}, timeout: {timeout}, allow: [{json.dumps(allow)}]}}\n"
    )
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def leaf_file(tmp_path: Path, ca: Issued, name: str, *, lifetime_days: int, left: dt.timedelta) -> tuple[Issued, str]:
    """Write a leaf of ``lifetime_days`` with ``left`` to go to ``name``.pem; return it and the path."""
    leaf = acme_leaf(ca, lifetime=lifetime_days * DAY, left=left, cn=f"{name}.test")
    path = tmp_path / f"{name}.pem"
    path.write_bytes(leaf.cert_pem)
    return leaf, str(path)


def ari_service(config_path: Path, *, clock: Callable[[], float] = time.time, storage: Path | None = None) -> Service:
    """Build the Service ``serve`` would, with ``clock`` and ``--storage.path``; scans run by ``scan_now()``."""
    loaded = config_mod.load_file(str(config_path))
    return Service(
        config=loaded,
        load=lambda: loaded,
        store=Store(),
        prober=Prober(),
        clock=clock,
        storage_path=str(storage) if storage else None,
    )


def band_of(snap: Snapshot, now: float, subject: str) -> str:
    """Return the band of the certificate with this subject in the status view."""
    view = status.build(snap, now=now)
    return next(c.band.value for s in view.sources for c in s.certs if c.subject == subject)


def frozen_clock(instant: float) -> Callable[[], float]:
    """Return a clock stopped at ``instant`` (a process's life seen at one moment)."""
    return lambda: instant
