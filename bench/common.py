"""Shared pieces of the benchmarks: certificate trees, a TLS fleet in its own process, an exporter process."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the benchmarks share the tests' helpers
from tests.support import NOW, PKI, children, free_port, write_pair


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_tree(directory: Path, count: int) -> None:
    """Write ``count`` PEM files: two thirds single leaves, one third 3-cert bundles, each leaf distinct."""
    pki = PKI()
    root = pki.ca("bench root")
    inter = pki.issue("bench intermediate", issuer=root, ca=True, not_after=NOW + dt.timedelta(days=1000))
    tail = inter.cert_pem + root.cert_pem
    key = ec.generate_private_key(ec.SECP256R1())
    builder_base = x509.CertificateBuilder().issuer_name(inter.cert.subject).public_key(key.public_key())
    for i in range(count):
        leaf = (
            builder_base.subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"host-{i}.bench")]))
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=30 + i % 300))
            .sign(inter.key, hashes.SHA256())
        )
        data = pem(leaf) + (tail if i % 3 == 2 else b"")
        sub = directory / f"d{i // 1000:03}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"c{i:06}.pem").write_bytes(data)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


FLEET_CODE = r"""
import asyncio, ssl, sys, json
cert, key, count, stall = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(cert, key)
async def hold(reader, writer):
    try:
        await reader.read(1)
    except Exception:
        pass
    writer.close()
async def never(reader, writer):
    await asyncio.sleep(3600)
async def main():
    servers = []
    for i in range(count):
        handler, tls = (never, None) if i < stall else (hold, ctx)
        servers.append(await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls, backlog=256))
    print(json.dumps([s.sockets[0].getsockname()[1] for s in servers]), flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


class Fleet:
    """``count`` TLS listeners on 127.0.0.1 in a separate process; the first ``stall`` accept and never answer."""

    def __init__(self, count: int, *, stall: int = 0) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gce-fleet-"))
        pki = PKI()
        write_pair(pki.leaf(pki.ca("bench fleet CA")), self.dir / "c.pem", self.dir / "k.pem")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                FLEET_CODE,
                str(self.dir / "c.pem"),
                str(self.dir / "k.pem"),
                str(count),
                str(stall),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.ports: list[int] = json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Exporter:
    """The exporter as users run it: its own process, its own scheduler."""

    def __init__(self, config_text: str, workdir: Path, *, extra: tuple[str, ...] = (), scheme: str = "http") -> None:
        self.port = free_port()
        config = workdir / "exporter.yaml"
        config.write_text(config_text)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn_cert_exporter",
                "--config",
                str(config),
                "--web.listen-address",
                f"127.0.0.1:{self.port}",
                "--log.level",
                "error",
                *extra,
            ]
        )
        self.url = f"{scheme}://127.0.0.1:{self.port}"

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=60) as response:
            body: bytes = response.read()
            return body.decode()

    def wait_for(self, needle: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                text = self.metrics()
                if needle in text:
                    return text
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(needle)
            time.sleep(0.5)

    def processes(self) -> list[int]:
        """The exporter's pid and its children's (the endpoints' probe process)."""
        return [self.proc.pid, *children(self.proc.pid)]

    def rss_mib(self) -> float:
        """Resident memory of the exporter and its probe process together."""
        total = 0
        for pid in self.processes():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except FileNotFoundError:
                continue  # a probe process replaced since it was listed
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total / 1024

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def ssl_client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def scrape_loop(port: int, stop_at: float) -> tuple[list[float], int]:
    """Scrape /metrics with gzip, a new connection each time, until ``stop_at`` (time.time()); latencies, errors.

    Each scraper runs in its own process, as separate Prometheus servers would: scraper threads sharing one
    interpreter would wait for each other's GIL and add that wait to what they measure.
    """
    import http.client

    latencies, errors = [], 0
    while time.time() < stop_at:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        t0 = time.perf_counter()
        try:
            conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
            response = conn.getresponse()
            body = response.read()
            errors += response.status != 200 or body[:2] != b"\x1f\x8b"
        except (OSError, http.client.HTTPException):
            errors += 1
        latencies.append(time.perf_counter() - t0)
        conn.close()
    return latencies, errors


def scrape_in_processes(port: int, *, scrapers: int, duration: float) -> tuple[list[float], int]:
    """Run ``scrapers`` scrape loops at once, each in its own process; all latencies and the error count."""
    from concurrent.futures import ProcessPoolExecutor

    stop_at = time.time() + duration
    with ProcessPoolExecutor(scrapers) as pool:
        results = list(pool.map(scrape_loop, [port] * scrapers, [stop_at] * scrapers))
    return [t for latencies, _ in results for t in latencies], sum(errors for _, errors in results)
