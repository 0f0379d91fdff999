"""`demo` tells the whole story on this machine, with nothing prepared, in under a minute."""

from __future__ import annotations

import subprocess
import sys
import time


def test_demo_runs_to_the_end_in_under_a_minute() -> None:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "gunicorn_cert_exporter", "demo"], capture_output=True,
                            text=True, timeout=90, check=False)  # fmt: skip
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    steps = [line.split()[0] for line in result.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert steps == [f"{i}/7" for i in range(1, 8)]
    assert "fingerprint_mismatch=1 (drift)" in result.stdout and "signals_total=1, failures_total=0" in result.stdout
    assert took < 60, f"demo took {took:.0f}s"
