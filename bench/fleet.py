"""A fleet slower than the scan's deadline (issue 24): black holes among healthy endpoints, scan by scan.

Run alone: python bench/fleet.py [--count 2000] [--holes 500] [--interval 60]; bench/run.py runs it as one phase.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import Exporter, Fleet, percentile, scrape_in_processes

from tests.support import children, parse_samples

_LAST_SCAN = 'gunicorn_cert_exporter_last_scan_timestamp_seconds{kind="endpoints"}'


class ChildWatch:
    """Record every probe process an exporter runs, polling its children until stopped."""

    def __init__(self, pid: int) -> None:
        self.seen: set[int] = set()
        self._pid, self._stop = pid, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            self.seen.update(children(self._pid))

    @property
    def restarts(self) -> int:
        """Probe processes started after the first."""
        return max(len(self.seen) - 1, 0)

    def stop(self) -> int:
        """Stop polling; return the restarts seen."""
        self._stop.set()
        self._thread.join()
        return self.restarts


def _scan_states(samples: dict[str, float], ports: list[int]) -> dict[int, str]:
    """Each endpoint's state in one published scan: 'up', or its reason."""
    states: dict[int, str] = {}
    for key, value in samples.items():
        if value != 1.0 or not key.startswith(("gunicorn_cert_endpoint_up{", "gunicorn_cert_endpoint_error{")):
            continue
        port = int(key.split('endpoint="127.0.0.1:', 1)[1].split('"', 1)[0])
        reason = key.split('reason="', 1)[1].split('"', 1)[0] if "reason=" in key else "up"
        states[port] = reason
    return {port: states.get(port, "") for port in ports}


def run(work: Path, *, count: int, holes: int, interval: float, scans: int) -> dict[str, float]:
    """Serve ``count`` endpoints, the first ``holes`` black holes (listed first: the worst order); watch ``scans``."""
    fleet = Fleet(count, stall=holes)
    text = "".join(f"  - {{address: '127.0.0.1:{p}', server_name: localhost}}\n" for p in fleet.ports)
    config = f"scan: {{interval: {interval:g}s, jitter: 0%, concurrency: 32}}\nendpoints:\n{text}"
    exporter = Exporter(config, work)
    watch = ChildWatch(exporter.proc.pid)
    healthy, black = fleet.ports[holes:], fleet.ports[:holes]
    out: dict[str, float] = {"count": count, "holes": holes, "interval": interval}
    try:
        last, scan = None, 0
        all_seen: int | None = None
        while scan < scans:
            samples = parse_samples(exporter.wait_for(_LAST_SCAN, timeout=interval * 3))
            if samples[_LAST_SCAN] == last:
                time.sleep(1)
                continue
            last, scan = samples[_LAST_SCAN], scan + 1
            states = _scan_states(samples, fleet.ports)
            out[f"scan{scan}_healthy_up"] = sum(states[p] == "up" for p in healthy)
            out[f"scan{scan}_late"] = sum(states[p] in ("scan_deadline", "") for p in fleet.ports)
            out[f"scan{scan}_holes_stalled"] = sum(states[p] == "stalled" for p in black)
            if all_seen is None and out[f"scan{scan}_late"] == 0:
                all_seen = scan
            print(f"fleet {count}/{holes}, scan {scan}: {out}", flush=True)
        out["scans_until_all"] = all_seen or float("nan")
        latencies, errors = scrape_in_processes(exporter.port, scrapers=20, duration=20)
        out.update(p50=percentile(latencies, 0.5), p99=percentile(latencies, 0.99), errors=errors)
        out["rss"] = exporter.rss_mib()
    finally:
        out["restarts"] = watch.stop()
        exporter.close()
        fleet.close()
    return out


def fleet_figures(work: Path, *, count: int = 2000, holes: int = 500, interval: float = 60) -> dict[str, float]:
    """The fleet with its black holes (three scans), then its healthy endpoints alone (one scan)."""
    with_holes = run(work, count=count, holes=holes, interval=interval, scans=3)
    alone = run(work, count=count - holes, holes=0, interval=interval, scans=1)
    return {**with_holes, **{f"alone_{k}": v for k, v in alone.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--holes", type=int, default=500)
    parser.add_argument("--interval", type=float, default=60)
    args = parser.parse_args()
    figures = fleet_figures(Path(tempfile.mkdtemp(prefix="gce-fleet-bench-")), count=args.count, holes=args.holes,
                            interval=args.interval)  # fmt: skip
    print(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
