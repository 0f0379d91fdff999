"""RSS of a real `serve` process probing 10 endpoints whose ca_file is touched every 0.5 s (issue 14).

Run by hand (about two minutes): python bench/tls_context_rss.py [--seconds 90]
Prints the exporter's RSS after warm-up and at the end; the client TLS context cache must keep it flat.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support import PKI, TLSServer, eventually, free_port, server_context


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--warmup", type=float, default=15.0)
    args = parser.parse_args()
    pki = PKI()
    root = pki.ca("bench root")
    servers = [TLSServer("127.0.0.1", context=server_context((pki.leaf(root),))) for _ in range(10)]
    with tempfile.TemporaryDirectory() as tmp:
        cas = [Path(tmp) / f"ca{i}.pem" for i in range(10)]
        for ca in cas:
            ca.write_bytes(root.cert_pem)
        pairs = zip(servers, cas, strict=True)
        endpoints = "".join(f"  - {{address: '{s.address}', ca_file: '{ca}'}}\n" for s, ca in pairs)
        config = Path(tmp) / "config.yaml"
        config.write_text(f"scan: {{interval: 1s, jitter: 0}}\nendpoints:\n{endpoints}")
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn_cert_exporter", "serve", "--config", str(config),
             "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "error"]
        )  # fmt: skip
        try:
            import urllib.request

            def verified() -> bool:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                    body: bytes = response.read()
                    return body.count(b"gunicorn_cert_endpoint_verified{") == 10

            eventually(verified, "10 endpoints probed")
            started, warm, samples = time.monotonic(), None, []
            while time.monotonic() - started < args.seconds:
                for ca in cas:
                    os.utime(ca)  # a new mtime: the old context must be dropped, not kept beside the new one
                time.sleep(0.5)
                now = time.monotonic() - started
                if warm is None and now >= args.warmup:
                    warm = rss_mb(proc.pid)
                samples.append(rss_mb(proc.pid))
            end = rss_mb(proc.pid)
            assert warm is not None
            print(f"RSS after {args.warmup:.0f}s warm-up: {warm:.1f} MB; after {args.seconds:.0f}s: {end:.1f} MB; "
                  f"growth {end - warm:+.1f} MB; max {max(samples):.1f} MB")  # fmt: skip
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            for server in servers:
                server.close()


if __name__ == "__main__":
    main()
