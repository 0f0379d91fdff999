"""Keystores and kubeconfigs against the same certificates as PEM files: one full files scan each (goal <= 2x PEM).

Run by hand: python bench/keystores.py [--count 1000] [--rounds 3]
Each of the COUNT files holds the same two certificates in each format (a leaf of its own and the shared CA):
PEM (leaf + CA), JKS (a trusted entry each, the layout keytool writes, with its keyed digest) and a kubeconfig
(the CA as a cluster's certificate-authority-data, the leaf as a user's client-certificate-data). A fresh scanner
per round, so every file is read and parsed.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gunicorn_cert_exporter.sources.files import FileScanner, Wanted

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _cert(
    cn: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None, signer: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    return builder.sign(signer, hashes.SHA256())


def _jks(entries: list[tuple[str, bytes]], password: str) -> bytes:
    body = bytes.fromhex("feedfeed") + (2).to_bytes(4, "big") + len(entries).to_bytes(4, "big")
    for alias, der in entries:
        name = alias.encode()
        body += (2).to_bytes(4, "big") + len(name).to_bytes(2, "big") + name + (0).to_bytes(8, "big")
        body += (5).to_bytes(2, "big") + b"X.509" + len(der).to_bytes(4, "big") + der
    digest = hashlib.sha1(password.encode("utf-16-be") + b"Mighty Aphrodite" + body).digest()  # noqa: S324
    return body + digest


def _kubeconfig(ca_pem: bytes, leaf_pem: bytes) -> str:
    return (
        "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster:\n    server: https://127.0.0.1:6443\n"
        f"    certificate-authority-data: {base64.b64encode(ca_pem).decode()}\n"
        "users:\n- name: admin\n  user:\n"
        f"    client-certificate-data: {base64.b64encode(leaf_pem).decode()}\n"
    )


def make(directory: Path, count: int) -> dict[str, list[str]]:
    """Write COUNT files of each format holding the same certificates."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("Bench CA", ca_key, None, ca_key)
    ca_pem, ca_der = ca.public_bytes(serialization.Encoding.PEM), ca.public_bytes(serialization.Encoding.DER)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    paths: dict[str, list[str]] = {"pem": [], "jks": [], "kubeconfig": []}
    for i in range(count):
        leaf = _cert(f"leaf-{i}.test", leaf_key, ca, ca_key)
        leaf_pem = leaf.public_bytes(serialization.Encoding.PEM)
        for kind, name, data in (
            ("pem", f"{i}.pem", leaf_pem + ca_pem),
            (
                "jks",
                f"{i}.jks",
                _jks([("leaf", leaf.public_bytes(serialization.Encoding.DER)), ("ca", ca_der)], "changeit"),
            ),
            ("kubeconfig", f"{i}.conf", _kubeconfig(ca_pem, leaf_pem).encode()),
        ):
            path = directory / kind / name
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)
            paths[kind].append(str(path))
    return paths


def scan_seconds(paths: list[str]) -> float:
    """One full scan of every path by a fresh scanner."""
    scanner = FileScanner(clock=time.time, max_size=1 << 20)
    started = time.perf_counter()
    results = scanner.scan([Wanted(p) for p in paths])
    took = time.perf_counter() - started
    broken = [r for r in results if r.error is not None or len(r.certs) != 2]
    assert not broken, broken[:1]
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = make(Path(tmp), args.count)
        times = {kind: statistics.median(scan_seconds(p) for _ in range(args.rounds)) for kind, p in paths.items()}
    print(f"{args.count} files of each format, median of {args.rounds} full scans:")
    for kind, took in times.items():
        ratio = took / times["pem"]
        verdict = "" if kind == "pem" else ("  (goal <= 2.0x: met)" if ratio <= 2 else "  (goal <= 2.0x: MISSED)")
        print(f"  {kind:10} {took * 1000:8.1f} ms   {ratio:4.2f}x PEM{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
