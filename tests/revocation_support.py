"""A CA that publishes revocation on loopback: leaves pointing at it, CRLs and OCSP answers built at test time;
an exporter serving them, and how its series and rows are read."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from tests.support import DAY, Issued, RunningExporter, serve_in_thread, start_exporter

Route = Callable[[bytes], tuple[int, bytes, dict[str, str]]]


@dataclass
class _State:
    routes: dict[str, Route] = field(default_factory=dict)
    asked: dict[str, int] = field(default_factory=dict)
    hold: threading.Event | None = None  # set: held requests answer; unset: they wait
    held: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server: Publisher

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        self._answer(b"")

    def do_POST(self) -> None:
        self._answer(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

    def _answer(self, body: bytes) -> None:
        state = self.server.state
        with state.lock:
            state.asked[self.path] = state.asked.get(self.path, 0) + 1
            route = state.routes.get(self.path)
        if self.path.startswith("/hold") and state.hold is not None:
            with state.lock:
                state.held += 1
            state.hold.wait(300)
        status, payload, headers = route(body) if route is not None else (404, b"", {})
        self.send_response(status)
        for name, value in {"Content-Length": str(len(payload)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


class Publisher(ThreadingHTTPServer):
    """An HTTP server on a loopback address serving what a test routes, counting each path asked."""

    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__((host, 0), _Handler)
        self.state = _State()
        self.connections = 0
        self._thread = serve_in_thread(self)

    def verify_request(self, request: object, client_address: object) -> bool:
        self.connections += 1
        return True

    def url(self, path: str) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def route(self, path: str, answer: Route | bytes) -> None:
        with self.state.lock:
            self.state.routes[path] = answer if callable(answer) else _fixed(answer)

    def asked(self, path: str) -> int:
        with self.state.lock:
            return self.state.asked.get(path, 0)

    def close(self) -> None:
        if self.state.hold is not None:
            self.state.hold.set()
        self.shutdown()
        self.server_close()


def _fixed(data: bytes) -> Route:
    def answer(_body: bytes) -> tuple[int, bytes, dict[str, str]]:
        return 200, data, {}

    return answer


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def leaf(
    ca: Issued,
    cn: str,
    *,
    crl: str | None = None,
    ocsp_url: str | None = None,
    ca_issuers: str | None = None,
    sans: tuple[str, ...] = ("localhost", "127.0.0.1"),
) -> Issued:
    """Issue a leaf that names its CRL Distribution Point and/or OCSP responder (and caIssuers)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = utc_now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - DAY)
        .not_valid_after(now + 60 * DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([_general_name(s) for s in sans]), critical=False)
    )
    if crl:
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(crl)], None, None, None)
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    access = (
        [x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))]
        if ocsp_url
        else []
    )
    if ca_issuers:
        access.append(
            x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(ca_issuers))
        )
    if access:
        builder = builder.add_extension(x509.AuthorityInformationAccess(access), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def _general_name(value: str) -> x509.GeneralName:
    import ipaddress

    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


def crl_der(
    ca: Issued,
    *,
    revoked: dict[int, x509.ReasonFlags] | None = None,
    signer: Issued | None = None,
    next_update: dt.datetime | None = None,
    idp: str | None = None,
    delta: bool = False,
    extra: int = 0,
) -> bytes:
    """Build a CRL of ``ca`` listing ``revoked`` (plus ``extra`` filler serials), signed by ``signer`` or the CA."""
    now = utc_now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - dt.timedelta(hours=1))
        .next_update(next_update or now + 7 * DAY)
        .add_extension(x509.CRLNumber(7), critical=False)
    )
    entries = dict(revoked or {})
    for serial, reason in entries.items():
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now - dt.timedelta(minutes=30))
        builder = builder.add_revoked_certificate(entry.add_extension(x509.CRLReason(reason), critical=False).build())
    for serial in range(1, extra + 1):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial * 7919).revocation_date(now - DAY).build()
        )
    if idp:
        point = x509.IssuingDistributionPoint(
            [x509.UniformResourceIdentifier(idp)], None, False, False, None, False, False
        )
        builder = builder.add_extension(point, critical=True)
    if delta:
        builder = builder.add_extension(x509.DeltaCRLIndicator(6), critical=True)
    return builder.sign((signer or ca).key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


Statuses = Mapping[int, tuple[str, x509.ReasonFlags | None]]


def responder(
    ca: Issued,
    statuses: Statuses,
    *,
    signer: Issued | None = None,
    delegate: bool = False,
    other_serial: bool = False,
    expired: bool = False,
) -> Route:
    """Answer OCSP requests for ``ca``'s serials: good, revoked (with reason) or unknown, signed as asked.

    ``other_serial``: answer for the next serial instead; ``expired``: a nextUpdate already past.
    """

    def answer(body: bytes) -> tuple[int, bytes, dict[str, str]]:
        asked = ocsp.load_der_ocsp_request(body)
        status, reason = statuses.get(asked.serial_number, ("unknown", None))
        now = utc_now()
        cert_status = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED}.get(
            status, ocsp.OCSPCertStatus.UNKNOWN
        )
        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            asked.issuer_name_hash, asked.issuer_key_hash, asked.serial_number + other_serial, asked.hash_algorithm,
            cert_status, now - dt.timedelta(hours=3), now - dt.timedelta(hours=1) if expired else now + DAY,
            now - dt.timedelta(hours=2) if status == "revoked" else None, reason,
        )  # fmt: skip
        by = signer or ca
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, by.cert)
        if delegate and signer is not None:
            builder = builder.certificates([signer.cert])
        response = builder.sign(by.key, hashes.SHA256())
        return 200, response.public_bytes(serialization.Encoding.DER), {"Content-Type": "application/ocsp-response"}

    return answer


def ocsp_signer(ca: Issued, *, ocsp_signing: bool = True) -> Issued:
    """Issue a delegated responder certificate: id-kp-OCSPSigning, or (told otherwise) serverAuth only."""
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.OCSP_SIGNING if ocsp_signing else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "OCSP responder")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(utc_now() - DAY)
        .not_valid_after(utc_now() + 30 * DAY)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def config(
    tmp_path: Path,
    *,
    files: Sequence[Path] = (),
    endpoints: Sequence[str] = (),
    revocation: dict[str, object] | None = None,
) -> Path:
    """Write a config with revocation on (loopback 127.0.0.1 allowed) and the files and endpoints given."""
    settings = {"enabled": True, "allow": ["127.0.0.1"], "interval": "1h", "timeout": "10s", **(revocation or {})}
    text = "scan: {interval: 1s}\n"
    if files:
        text += "files:\n" + "".join(f"  - paths: [{json.dumps(str(p))}]\n" for p in files)
    if endpoints:
        text += "endpoints:\n" + "".join(f"  - address: {json.dumps(e)}\n    ca_file: null\n" for e in endpoints)
    text += f"revocation: {json.dumps(settings)}\n"
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


REASON = x509.ReasonFlags.key_compromise
HOUR = dt.timedelta(hours=1)


def files_of(tmp_path: Path, ca: Issued, *leaves: tuple[str, Issued]) -> list[Path]:
    """Write each leaf with its CA after it (the bundle holds the issuer), return the paths."""
    paths = []
    for name, issued in leaves:
        path = tmp_path / f"{name}.pem"
        path.write_bytes(issued.cert_pem + ca.cert_pem)
        paths.append(path)
    return paths


def serve(tmp_path: Path, ca: Issued, *leaves: tuple[str, Issued], **revocation: object) -> RunningExporter:
    exporter = start_exporter(config(tmp_path, files=files_of(tmp_path, ca, *leaves), revocation=dict(revocation)))
    exporter.scan_now()
    return exporter


def samples(exporter: RunningExporter, name: str) -> dict[str, float]:
    return {k: v for k, v in exporter.metrics().items() if k.startswith(name + "{")}


def one(samples: dict[str, float], *needles: str) -> float:
    found = [v for k, v in samples.items() if all(n in k for n in needles)]
    assert len(found) == 1, (needles, samples)
    return found[0]


def rows(exporter: RunningExporter) -> dict[str, dict[str, object]]:
    code, body = exporter.get("/api/v1/status")
    assert code == 200
    return {
        str(cert["subject"]).removeprefix("CN="): cert for row in json.loads(body)["sources"] for cert in row["certs"]
    }
