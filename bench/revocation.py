"""One CRL with 100,000 entries read and 10,000 leaves looked up, against ``openssl crl -noout`` (goal <= 1.5x).

Run by hand: python bench/revocation.py [--entries 100000] [--leaves 10000] [--rounds 5]
The CRL is built once with cryptography (about 30 s for 100,000 entries, each with a reason) and written as DER.
Ours: what the revocation pool does with a fetched body (crl_fetched.read: the checks and the serial index), the
signature verified with the issuer, then 10,000 lookups (1% of them listed, their date and reason decoded).
openssl: ``openssl crl -noout -inform DER`` reads the same file (a process start included, as it must be), and
with ``-CAfile`` it verifies the signature too. Medians of ROUNDS.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gunicorn_cert_exporter.sources import certs, crl_fetched, crl_index

BASE = 10**30  # 100-bit serials, as CAs issue them
STEP = 7919


def make(directory: Path, entries: int) -> tuple[Path, Path]:
    """Write the CA (PEM) and a CRL listing ``entries`` serials (DER)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bench CRL CA")])
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    ca = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    builder = x509.CertificateRevocationListBuilder().issuer_name(name).last_update(now)
    builder = builder.next_update(now + dt.timedelta(days=7))
    reason = x509.CRLReason(x509.ReasonFlags.key_compromise)
    for i in range(entries):
        entry = x509.RevokedCertificateBuilder().serial_number(BASE + i * STEP).revocation_date(now)
        builder = builder.add_revoked_certificate(entry.add_extension(reason, critical=False).build())
    ca_path, crl_path = directory / "ca.pem", directory / "big.crl"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    crl_path.write_bytes(builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    return ca_path, crl_path


def ours(crl_path: Path, ca_path: Path, serials: list[int]) -> tuple[float, int]:
    """Read, verify and look up as the pool does; return the seconds and how many serials were listed."""
    issuer = certs.parse(ca_path.read_bytes()).certs[0]
    started = time.perf_counter()
    read = crl_fetched.read(crl_path.read_bytes(), url="http://crl.example/big.crl")
    assert not isinstance(read, str), read
    parsed = time.perf_counter()
    verified = crl_fetched.verify(read, [issuer])
    checked = time.perf_counter()
    listed = sum(1 for serial in serials if crl_index.find(read.index, serial) is not None)
    took = time.perf_counter() - started
    print(f"    read {(parsed - started) * 1000:.0f} ms, verify {(checked - parsed) * 1000:.0f} ms, "
          f"lookups {(started + took - checked) * 1000:.0f} ms")  # fmt: skip
    assert verified.verified, verified.verify_error
    return took, listed


def openssl(crl_path: Path, ca_path: Path | None) -> float:
    command = [shutil.which("openssl") or "openssl", "crl", "-noout", "-inform", "DER", "-in", str(crl_path)]
    if ca_path is not None:
        command += ["-CAfile", str(ca_path)]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--leaves", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    # 1% of the leaves are listed (their entries are decoded); the others are not.
    serials = [BASE + (i * 37 % args.entries) * STEP + (0 if i % 100 == 0 else 1) for i in range(args.leaves)]
    with tempfile.TemporaryDirectory() as tmp:
        ca_path, crl_path = make(Path(tmp), args.entries)
        size = crl_path.stat().st_size
        runs = [ours(crl_path, ca_path, serials) for _ in range(args.rounds)]
        mine = statistics.median(took for took, _ in runs)
        plain = statistics.median(openssl(crl_path, None) for _ in range(args.rounds))
        verifying = statistics.median(openssl(crl_path, ca_path) for _ in range(args.rounds))
    listed = runs[0][1]
    print(f"CRL of {args.entries} entries ({size / 1e6:.1f} MB), {args.leaves} leaves ({listed} listed), "
          f"median of {args.rounds}:")  # fmt: skip
    print(f"  exporter (read + verify + lookups) {mine * 1000:8.1f} ms")
    for label, theirs in (("openssl crl -noout", plain), ("openssl crl -noout -CAfile", verifying)):
        ratio = mine / theirs
        verdict = "met" if ratio <= 1.5 else "MISSED"
        print(f"  {label:34} {theirs * 1000:8.1f} ms   exporter {ratio:4.2f}x  (goal <= 1.5x: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
