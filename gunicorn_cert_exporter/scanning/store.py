"""The latest snapshot, swapped atomically: scans write whole parts, scrapes read without waiting."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from gunicorn_cert_exporter.model import (
    DiscoveryReport,
    EndpointResult,
    FileResult,
    PatternResult,
    ScanStats,
    Snapshot,
    TargetState,
)
from gunicorn_cert_exporter.vocabulary import ScanKind


class Store:
    """Hold the last completed snapshot; readers never take the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot = Snapshot()
        self._listeners: list[Callable[[Snapshot], None]] = []

    def subscribe(self, listener: Callable[[Snapshot], None]) -> None:
        """Call ``listener`` with the new snapshot after every publish, in the publishing thread."""
        self._listeners.append(listener)

    def _published(self) -> None:
        snapshot = self._snapshot
        for listener in self._listeners:
            listener(snapshot)

    @property
    def snapshot(self) -> Snapshot:
        """Return the last completed snapshot (an immutable value)."""
        return self._snapshot

    def update(self, **parts: Any) -> None:  # noqa: ANN401  (fields of Snapshot, checked by replace())
        """Replace some parts of the snapshot in one step."""
        with self._lock:
            self._snapshot = replace(self._snapshot, **parts)
        self._published()

    def update_target(self, state: TargetState) -> None:
        """Publish one target's state ahead of its scan's end (a reload is about to be confirmed)."""
        with self._lock:
            others = tuple(t for t in self._snapshot.targets if t.name != state.name)
            self._snapshot = replace(self._snapshot, targets=(*others, state))
        self._published()

    def record_files(
        self, stats: ScanStats, *, files: tuple[FileResult, ...], patterns: tuple[PatternResult, ...]
    ) -> None:
        """Publish a files scan: every file and pattern, with its timing."""
        with self._lock:
            snap = self._snapshot
            self._snapshot = replace(snap, scans=_timed(snap, ScanKind.FILES, stats), files=files, patterns=patterns)
        self._published()

    def record_endpoints(self, stats: ScanStats, *, endpoints: tuple[EndpointResult, ...]) -> None:
        """Publish an endpoints scan with its timing."""
        with self._lock:
            snap = self._snapshot
            self._snapshot = replace(snap, scans=_timed(snap, ScanKind.ENDPOINTS, stats), endpoints=endpoints)
        self._published()

    def record_targets(
        self, stats: ScanStats, *, targets: tuple[TargetState, ...], discovery: DiscoveryReport | None = None
    ) -> None:
        """Publish a Gunicorn targets scan (and what its discovery found) with its timing."""
        with self._lock:
            snap = self._snapshot
            found = snap.discovery if discovery is None else discovery
            self._snapshot = replace(
                snap, scans=_timed(snap, ScanKind.GUNICORN, stats), targets=targets, discovery=found
            )
        self._published()


def _timed(snap: Snapshot, kind: ScanKind, stats: ScanStats) -> tuple[tuple[ScanKind, ScanStats], ...]:
    """Return the snapshot's scan timings with ``kind``'s replaced, in kind order."""
    scans = dict(snap.scans)
    scans[kind] = stats
    return tuple(sorted(scans.items()))
