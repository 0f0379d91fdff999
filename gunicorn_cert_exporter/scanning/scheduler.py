"""APScheduler in the background: runs the scans of the current config, swaps them when the config changes."""

from __future__ import annotations

from datetime import datetime, timezone

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from gunicorn_cert_exporter.scanning.scans import KINDS, Scans


class Scheduler:
    """Run the scans of the current config in the background; swap them when the config changes."""

    def __init__(self, scans: Scans) -> None:
        self._scheduler = BackgroundScheduler(
            timezone=timezone.utc, job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
        )
        self._scans = scans

    @property
    def scans(self) -> Scans:
        """Return the scans now scheduled."""
        return self._scans

    def start(self) -> None:
        """Schedule every scan, the first run now."""
        self._schedule(self._scans)
        self._scheduler.start()

    def replace(self, scans: Scans) -> None:
        """Swap the scheduled scans for those of a new config; the new ones run at once."""
        old, self._scans = self._scans, scans
        old.retire()
        self._schedule(scans)

    def shutdown(self) -> None:
        """Stop scheduling (if started); running scans finish in the background."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def _schedule(self, scans: Scans) -> None:
        interval = scans.config.scan.interval
        jitter = int(interval * scans.config.scan.jitter) or None
        now = datetime.now(timezone.utc)
        for kind, job in zip(KINDS, (scans.scan_files, scans.scan_endpoints, scans.scan_targets), strict=True):
            self._scheduler.add_job(
                job,
                IntervalTrigger(seconds=interval, jitter=jitter),
                id=kind,
                name=f"scan {kind}",
                replace_existing=True,
                next_run_time=now,
            )
