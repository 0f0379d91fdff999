"""Load test: 20 concurrent scrapers for 60 s while 10,000 files and 200 endpoints are scanned.

Run by hand: python bench/load.py [--duration 60 --scrapers 20 --files 10000 --endpoints 200]
Reports scrape latency p50/p99/max and errors; exits 1 if any scrape failed.
"""

from __future__ import annotations

import argparse
import http.client
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Exporter, Fleet, machine, make_tree, percentile


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--scrapers", type=int, default=20)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--endpoints", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gce-load-"))
    print(f"machine: {machine()}")
    started = time.monotonic()
    make_tree(work / "certs", args.files)
    print(f"wrote {args.files} files in {time.monotonic() - started:.1f}s")
    fleet = Fleet(args.endpoints)
    endpoints = "".join(f"  - {{address: '127.0.0.1:{p}', server_name: localhost, timeout: 5s}}\n" for p in fleet.ports)
    # interval 5s: scans run back to back during the whole test, so every scrape overlaps a scan.
    exporter = Exporter(
        f"scan: {{interval: 5s, jitter: 0%, concurrency: 32}}\nfiles: [{{paths: ['{work}/certs/**/*.pem']}}]\n"
        f"endpoints:\n{endpoints}",
        work,
    )
    try:
        exporter.wait_for('gunicorn_cert_exporter_last_scan_timestamp_seconds{kind="endpoints"}')
        exporter.wait_for('gunicorn_cert_exporter_last_scan_timestamp_seconds{kind="files"}')
        latencies: list[float] = []
        errors: list[str] = []
        sizes: list[int] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + args.duration

        def scrape() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", exporter.port, timeout=30)
            while time.monotonic() < stop_at:
                t0 = time.perf_counter()
                try:
                    conn.request("GET", "/metrics")
                    response = conn.getresponse()
                    body = response.read()
                    ok = response.status == 200 and b"gunicorn_cert_file_up" in body
                except (OSError, http.client.HTTPException) as exc:
                    ok, body = False, str(exc).encode()
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", exporter.port, timeout=30)
                took = time.perf_counter() - t0
                with lock:
                    latencies.append(took)
                    sizes.append(len(body))
                    if not ok:
                        errors.append(body[:200].decode("utf-8", "replace"))
            conn.close()

        scans_before = _scan_times(exporter.metrics())
        threads = [threading.Thread(target=scrape) for _ in range(args.scrapers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        scans_after = _scan_times(exporter.metrics())
        print(f"{args.scrapers} scrapers x {args.duration:.0f}s, {args.files} files, {args.endpoints} endpoints")
        print(f"scrapes: {len(latencies)}  errors: {len(errors)}  body: {sizes[-1] / 1e6:.1f} MB")
        print(
            f"latency: p50 {percentile(latencies, 0.5) * 1000:.0f} ms  p99 {percentile(latencies, 0.99) * 1000:.0f} ms"
            f"  max {max(latencies) * 1000:.0f} ms"
        )
        print(
            "scans finished during the test: "
            + ", ".join(f"{k} {scans_after[k] != scans_before.get(k)}" for k in sorted(scans_after))
        )
        print(f"exporter RSS: {exporter.rss_mib():.0f} MiB")
        for error in errors[:5]:
            print("error:", error)
        return 1 if errors else 0
    finally:
        exporter.close()
        fleet.close()


def _scan_times(text: str) -> dict[str, str]:
    return dict(re.findall(r'gunicorn_cert_exporter_last_scan_timestamp_seconds\{kind="(\w+)"\} (\S+)', text))


if __name__ == "__main__":
    raise SystemExit(main())
