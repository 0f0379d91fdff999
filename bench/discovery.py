"""One discovery pass on a busy host, against reading every /proc/*/cmdline bare.

Run by hand: python bench/discovery.py [--processes 2000] [--masters 10]
Starts that many idle processes (``sleep``) and that many real TLS Gunicorn masters (one worker each, without
setproctitle so their command lines are readable), then times ``find_masters()`` and the bare loop, alternating,
and reports the medians and their ratio. Goal: at most 3x the bare loop and under 100 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gunicorn_cert_exporter.sources.discovery import find_masters
from tests.support import PKI, REPO, free_port, stop_process, write_pair

APP = "gunicorn_cert_exporter.demo_app:wsgi_app"


def bare_cmdlines() -> int:
    """The floor: read every process's command line once, nothing else."""
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as handle:
                    count += len(handle.read())
            except OSError:
                continue
    return count


def median_ms(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def start_masters(work: Path, count: int) -> list[subprocess.Popen[bytes]]:
    pki = PKI()
    leaf = pki.leaf(pki.ca("Bench CA"))
    hide = work / "no-setproctitle"
    hide.mkdir()
    (hide / "setproctitle.py").write_text("raise ImportError('hidden')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hide), str(REPO)])}
    masters = []
    for index in range(count):
        directory = work / f"g{index}"
        directory.mkdir()
        write_pair(leaf, directory / "cert.pem", directory / "key.pem")
        command = [sys.executable, "-m", "gunicorn", "-w", "1", "--certfile", "cert.pem", "--keyfile", "key.pem"]
        command += ["-b", f"127.0.0.1:{free_port()}", APP]
        masters.append(
            subprocess.Popen(command, cwd=directory, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
    return masters


def figures(*, processes: int = 2000, masters: int = 10, rounds: int = 21) -> dict[str, float]:
    """Start the processes and masters, then time a discovery pass and the bare loop, alternating (medians, ms)."""
    with tempfile.TemporaryDirectory() as tmp:
        idle = [subprocess.Popen(["sleep", "600"]) for _ in range(processes)]
        started = start_masters(Path(tmp), masters)
        try:
            deadline = time.monotonic() + 60
            while len(find_masters()) < masters and time.monotonic() < deadline:
                time.sleep(0.5)
            bare, full = [], []
            for _ in range(rounds):
                bare.append(median_ms(bare_cmdlines, 1))
                full.append(median_ms(find_masters, 1))
            return {
                "processes": sum(1 for name in os.listdir("/proc") if name.isdigit()),
                "found": len(find_masters()),
                "masters": masters,
                "rounds": rounds,
                "bare": statistics.median(bare),
                "full": statistics.median(full),
            }
        finally:
            for process in idle:
                process.kill()
            for process in idle:
                process.wait()
            for master in started:
                stop_process(master)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2000)
    parser.add_argument("--masters", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    f = figures(processes=args.processes, masters=args.masters, rounds=args.rounds)
    print(f"processes on the host: {f['processes']:.0f}; masters found: {f['found']:.0f} of {args.masters} started")
    print(f"bare /proc/*/cmdline loop: {f['bare']:.1f} ms (median of {args.rounds})")
    print(f"discovery pass (find_masters): {f['full']:.1f} ms (median of {args.rounds})")
    ratio = f["full"] / f["bare"] if f["bare"] else float("inf")
    verdict = "met" if ratio <= 3 and f["full"] < 100 else "NOT met"
    print(f"ratio: {ratio:.2f}x (goal <= 3x and < 100 ms: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
