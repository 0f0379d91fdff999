"""What the two background fetch pools share: ARI (scanning/renewals.py) and revocation (revocation_pool.py).

A scan never waits for either: each published scan only wakes a pass (``observe``), which runs in the pool's own
threads, starts what is due (at most one fetch per key at a time) and publishes what is known. A fetch that ends
wakes another pass, so what it learnt is published judged against the latest snapshot. A bug in a pass or a fetch
is logged with its traceback, never lost in a future nobody reads. Each pool keeps its own threads, caps and
memory: a 20 MiB CRL taking its whole time cap must not hold back the renewal windows, nor ARI requests the CRLs.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from gunicorn_cert_exporter.model import Snapshot


class FetchPool(ABC):
    """A bounded pool of fetch threads woken by published scans; subclasses say what a pass does."""

    def __init__(self, *, workers: int, name: str, log: logging.Logger) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._name, self._log = name, log
        self._lock = threading.Lock()  # guards the in-flight map, the queued flag and each subclass's known answers
        self._in_flight: dict[str, Future[None]] = {}
        self._queued = False
        self._seen: tuple[object, ...] = ()
        self.fetches = 0  # fetches started (tests count them)

    @abstractmethod
    def _enabled(self) -> bool:
        """Return whether the config in force asks for this pool's work at all."""

    @abstractmethod
    def _pass(self) -> None:
        """Start what is due and publish what is known (runs in the pool; ``_take_queued()`` first)."""

    def observe(self, snap: Snapshot) -> None:
        """Wake a pass when a scan published new results (never waits; the pool's own publishes are ignored)."""
        seen = (snap.files, snap.endpoints, snap.targets)
        if len(seen) == len(self._seen) and all(a is b for a, b in zip(seen, self._seen, strict=True)):
            return
        self._seen = seen
        self.wake()

    def wake(self) -> None:
        """Queue one pass unless one is already queued."""
        if not self._enabled():
            return
        with self._lock:
            if self._queued:
                return
            self._queued = True
        try:
            self._pool.submit(self._logged(self._pass))
        except RuntimeError:  # stopped
            return

    def stop(self) -> None:
        """Stop taking work; fetches in flight end within their time cap."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _take_queued(self) -> None:
        """Mark the queued pass as started: a scan published from now on queues another."""
        with self._lock:
            self._queued = False

    def _hold_queued(self) -> None:
        """Mark a pass as queued (one run by hand): scans published meanwhile queue nothing more."""
        with self._lock:
            self._queued = True

    def _pending(self) -> list[Future[None]]:
        """Return the fetches in flight now."""
        with self._lock:
            return list(self._in_flight.values())

    def _submit(self, key: str, work: Callable[..., None], *args: object) -> None:
        """Start one fetch unless one for ``key`` is running (caller holds the lock)."""
        if key in self._in_flight:
            return
        self.fetches += 1
        self._in_flight[key] = self._pool.submit(self._logged(self._finish), key, work, *args)

    def _finish(self, key: str, work: Callable[..., None], *args: object) -> None:
        try:
            work(*args)
        finally:
            with self._lock:
                self._in_flight.pop(key, None)
        self.wake()  # publish what was learnt, judged against the latest snapshot

    def _logged(self, work: Callable[..., None]) -> Callable[..., None]:
        def run(*args: object) -> None:
            try:
                work(*args)
            except Exception:  # noqa: BLE001  (a bug in one pass or fetch must not go unseen)
                self._log.exception("%s work failed", self._name)

        return run
