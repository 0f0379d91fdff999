"""`demo` tells the whole story on this machine, with nothing prepared (in under a minute on a quiet machine)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gunicorn_cert_exporter.demo_workers import Workers

pytestmark = pytest.mark.integration  # every test here starts a process or an external tool


@pytest.mark.parametrize("how", ["console script", "python -m"])
def test_demo_runs_to_the_end(how: str) -> None:
    # The README runs the console script: then the exporter itself is Gunicorn's parent, named gunicorn-...
    script = Path(sys.executable).with_name("gunicorn-cert-exporter")  # installed beside this interpreter
    assert script.is_file(), "pip install -e . provides the console script"
    command = (
        [str(script), "demo"] if how == "console script" else [sys.executable, "-m", "gunicorn_cert_exporter", "demo"]
    )
    # How long it takes is not asserted: a busy machine would break any bound (the timeout only stops a hang).
    result = subprocess.run(command, capture_output=True, text=True, timeout=110, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    steps = [line.split()[0] for line in result.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert steps == [f"{i}/10" for i in range(1, 11)]
    # The bands follow each certificate's lifetime: 159 h left of 160 is fine, 20 days left of 90 is overdue.
    lifetimes = next(line for line in result.stdout.splitlines() if line.strip().startswith("4/10"))
    assert "160-hour leaf issued an hour ago is ok (6.6 d left, 99% of its life)" in lifetimes, lifetimes
    assert "90-day leaf never renewed is warning (20.0 d left, 22% of its life)" in lifetimes, lifetimes
    # The renewed key is unreadable to the workers: the reload waits for the fix, then one HUP brings the new leaf.
    # As root the workers drop to nobody only where nobody can reach this Python (a checkout under a 0700 folder
    # can't be): there they stay root, read any key, and the demo says there is no access check to show.
    if Workers().blocks:
        assert "key denied to the workers: reload blocked, no HUP (the workers can't read key_file" in result.stdout
    else:
        assert "the workers run as root here and read any key: no access check to show" in result.stdout
    assert "fingerprint_mismatch=1 (drift)" in result.stdout and "signals_total=1, failures_total=0" in result.stdout
