"""Hostile file content and a hostile filesystem: never a crash, never a hang, bounded memory, the right reason."""

from __future__ import annotations

import os
import threading
import time
import tracemalloc
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gunicorn_cert_exporter.model import FileReason, Parsed
from gunicorn_cert_exporter.safe_read import read_capped
from gunicorn_cert_exporter.sources import certs
from gunicorn_cert_exporter.sources.files import FileScanner, Wanted
from tests.support import PKI, Issued, RunningExporter, StartExporter, deep_tree, remove_tree

# Deterministic in the suite (CI must not turn red on a new random draw); bench/fuzz_parser.py runs the long
# random campaign by hand.
FAST = settings(max_examples=500, deadline=1000, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def _well_formed(parsed: Parsed) -> None:
    assert isinstance(parsed, Parsed)
    assert parsed.error is None or isinstance(parsed.error, FileReason)
    assert parsed.error is not None or parsed.certs or parsed.keys


@FAST
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_never_crash_the_parser(data: bytes) -> None:
    _well_formed(certs.parse(data))
    _well_formed(certs.parse(data, fmt="der"))
    _well_formed(certs.parse(data, fmt="pkcs12", password=b"x"))


@FAST
@given(st.data())
def test_mutated_certificates_never_crash_the_parser(data: st.DataObject) -> None:
    for blob in (_SAMPLE_PEM, _SAMPLE_DER, _RICH_DER):
        cut = data.draw(st.integers(0, len(blob)))
        position = data.draw(st.integers(0, len(blob) - 1))
        flipped = blob[:position] + bytes([blob[position] ^ data.draw(st.integers(1, 255))]) + blob[position + 1 :]
        _well_formed(certs.parse(blob[:cut]))
        _well_formed(certs.parse(flipped))


def _sample() -> tuple[bytes, bytes]:
    leaf = PKI().leaf(PKI().ca())
    return leaf.cert_pem, leaf.cert.public_bytes(serialization.Encoding.DER)


_SAMPLE_PEM, _SAMPLE_DER = _sample()


def _rich() -> bytes:
    """A certificate with every extension the parser reads: SANs of four kinds, CA flag, AIA, key usage."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rich.example"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Org")])  # fmt: skip
    sans = [x509.DNSName("a.example"), x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
            x509.RFC822Name("a@b.example"), x509.UniformResourceIdentifier("https://a.example/")]  # fmt: skip
    aia = [x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS,
                                  x509.UniformResourceIdentifier("http://ca.example/i.der"))]  # fmt: skip
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(12345).not_valid_before(now).not_valid_after(now + dt.timedelta(days=400))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(x509.AuthorityInformationAccess(aia), critical=False)
        .add_extension(x509.KeyUsage(True, False, True, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.DER)


_RICH_DER = _rich()


def test_malformed_corpus_gets_the_right_reasons(pki: PKI, root: Issued) -> None:
    leaf = pki.leaf(root)
    der = leaf.cert.public_bytes(serialization.Encoding.DER)
    p12 = pkcs12.serialize_key_and_certificates(
        b"x", leaf.key, leaf.cert, None, serialization.BestAvailableEncryption(b"right")
    )
    nested = b"".join(b"\x30\x84" + (4 * (10_000 - i)).to_bytes(4, "big") for i in range(10_000))
    corpus = {
        "truncated PEM": (leaf.cert_pem[: len(leaf.cert_pem) // 2], FileReason.PARSE_ERROR),
        "truncated DER": (der[: len(der) // 2], FileReason.PARSE_ERROR),
        "truncated PKCS#12": (p12[: len(p12) // 2], FileReason.PARSE_ERROR),
        "deeply nested ASN.1": (nested, FileReason.PARSE_ERROR),
        "huge PEM header": (
            b"-----BEGIN CERTIFICATE-----\nX-Header: " + b"A" * 500_000 + b"\n\n-----END CERTIFICATE-----\n",
            FileReason.PARSE_ERROR,
        ),
        "BEGIN without END": (b"-----BEGIN CERTIFICATE-----\n" + b"QUFB\n" * 10_000, FileReason.PARSE_ERROR),
        "NUL bytes": (b"\x00" * 4096, FileReason.PARSE_ERROR),
    }
    for name, (data, reason) in corpus.items():
        started = time.thread_time()  # the CPU this thread spent: a busy machine delays it, it doesn't grow
        parsed = certs.parse(data, name=name)
        assert parsed.error is reason, name
        assert time.thread_time() - started < 2, name
    assert certs.parse(p12, password=b"wrong", name="x.p12").error is FileReason.BAD_PASSWORD
    noisy = b"junk\n" + leaf.cert_pem + b"\x00\xff garbage \n" + root.cert_pem + b"trailing"
    assert len(certs.parse(noisy).certs) == 2  # garbage between blocks is ignored, as openssl does


def test_ten_thousand_certificate_bundle(tmp_path: Path, pki: PKI, root: Issued) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pki.leaf(root).cert_pem * 10_000)
    scanner = FileScanner(clock=time.time, max_size=16 << 20)
    started = time.thread_time()  # CPU, not wall time: what a quadratic parse would grow
    result = scanner.scan_one(Wanted(str(bundle)))
    assert result.error is None and len(result.certs) == 10_000
    assert time.thread_time() - started < 30
    capped = FileScanner(clock=time.time, max_size=1 << 20).scan_one(Wanted(str(bundle)))
    assert capped.error is FileReason.TOO_LARGE


def test_memory_is_bounded_by_the_size_cap_even_if_the_file_grows(tmp_path: Path) -> None:
    huge = tmp_path / "huge.pem"
    with open(huge, "wb") as handle:
        handle.truncate(200 << 20)  # sparse: 200 MiB that a naive read would load
    scanner = FileScanner(clock=time.time, max_size=1 << 20)
    tracemalloc.start()
    try:
        data, _ = read_capped(str(huge), 1 << 20)  # the read a file that grew after stat() would reach
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(data) == (1 << 20) + 1
    assert peak < 8 << 20, f"peak {peak >> 20} MiB reading under a 1 MiB cap"
    assert scanner.scan_one(Wanted(str(huge))).error is FileReason.TOO_LARGE


def test_file_removed_between_listing_and_reading(tmp_path: Path, root: Issued) -> None:
    path = tmp_path / "gone.pem"
    path.write_bytes(root.cert_pem)
    scanner = FileScanner(clock=time.time, max_size=1 << 20)
    first = scanner.scan([Wanted(str(path))])[0]
    path.unlink()
    second = scanner.scan([Wanted(str(path))])[0]
    assert second.error is FileReason.NOT_FOUND
    assert second.changed_at == first.changed_at  # the series keeps its last known change time


def test_data_symlink_swapped_during_scans_never_gives_a_broken_result(tmp_path: Path, pki: PKI, root: Issued) -> None:
    volume = tmp_path / "secret"
    volume.mkdir()
    leaves = [pki.leaf(root), pki.leaf(root)]
    for i, leaf in enumerate(leaves):
        (volume / f"..v{i}").mkdir()
        (volume / f"..v{i}" / "tls.crt").write_bytes(leaf.cert_pem)
    (volume / "..data").symlink_to("..v0")
    (volume / "tls.crt").symlink_to("..data/tls.crt")
    stop = threading.Event()

    def swap() -> None:
        i = 0
        while not stop.is_set():
            i ^= 1
            (volume / "..tmp").symlink_to(f"..v{i}")
            os.replace(volume / "..tmp", volume / "..data")

    swapper = threading.Thread(target=swap)
    swapper.start()
    seen = set()
    try:
        scanner = FileScanner(clock=time.time, max_size=1 << 20)
        for _ in range(300):
            result = scanner.scan_one(Wanted(str(volume / "tls.crt")))
            assert result.error is None, result
            seen.add(result.certs[0].fingerprint_sha256)
    finally:
        stop.set()
        swapper.join()
    assert seen <= {leaf.fingerprint for leaf in leaves} and seen


def test_a_file_that_grows_between_stat_and_read_is_refused_as_too_large(tmp_path: Path, root: Issued) -> None:
    """The size check after the read: stat saw a small file, the read found more than the cap."""
    path = tmp_path / "growing.pem"
    path.write_bytes(root.cert_pem)
    cap = 4096

    def read_after_growth(name: str, max_size: int) -> tuple[bytes, os.stat_result]:
        info = os.stat(name)  # what the scanner saw, small
        return root.cert_pem + b"\n" * (max_size + 1 - len(root.cert_pem)), info

    scanner = FileScanner(clock=time.time, max_size=cap, reader=read_after_growth)
    result = scanner.scan_one(Wanted(str(path)))
    assert result.error is FileReason.TOO_LARGE
    assert result.certs == ()


def test_a_tree_1200_levels_deep_never_removes_another_sources_series(
    run_exporter: StartExporter, tmp_path: Path, root: Issued
) -> None:
    deep = tmp_path / "deep"
    deep_tree(deep, 1200, {1200: root.cert_pem})
    (tmp_path / "app.pem").write_bytes(root.cert_pem)
    try:
        exporter: RunningExporter = run_exporter(
            f"files: [{{paths: ['{deep}/**']}}, {{paths: ['{tmp_path}/app.pem']}}]"
        )
        for _ in range(2):
            exporter.scan_now()
            metrics = exporter.metrics()
            assert metrics[f'gunicorn_cert_file_up{{path="{tmp_path}/app.pem"}}'] == 1
            assert metrics[f'gunicorn_cert_file_pattern_error{{pattern="{deep}/**",reason="max_depth"}}'] == 1
    finally:
        remove_tree(deep)
