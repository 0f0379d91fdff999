"""Config reloads asked for from outside (SIGHUP, ``POST /-/reload``): at most one applied a second, the rest folded.

A flood of requests costs one reload a second and a counter: a request that arrives while a reload is applying, or
within a second of the last one, is not applied on its own. It is coalesced into the next reload, which one thread
(started at the first coalesced request, alive until ``close()``) applies as soon as the second has passed; it is
counted in ``gunicorn_cert_exporter_config_reloads_coalesced_total`` and logged once per reload that folds any.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from gunicorn_cert_exporter.metrics.catalogue import BY_NAME

MIN_INTERVAL = 1.0
"""Seconds between the starts of two applied reloads, at least."""

_log = logging.getLogger("gunicorn_cert_exporter")


class ConfigReloads(Collector):
    """Apply config reloads at most once per ``every`` seconds; coalesce and count the rest."""

    def __init__(
        self,
        apply: Callable[[], list[str]],
        *,
        every: float = MIN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._apply, self._every, self._clock = apply, every, clock
        # Reentrant: a second SIGHUP may run its handler while the first one's holds the lock, in the same thread.
        self._changed = threading.Condition(threading.RLock())
        self._applying = False
        self._wanted = False  # a reload waits for the reloads thread
        self._folded = 0  # requests coalesced into that reload
        self._last = float("-inf")  # when the last reload started
        self._coalesced = 0
        self._closed = False
        self._started = False  # the reloads thread

    def now(self) -> list[str] | None:
        """Apply a reload in this thread and return its problems; None if it was coalesced into the next one."""
        with self._changed:
            if self._busy():
                self._fold()
                return None
            self._claim()
        try:
            return self._apply()
        finally:
            with self._changed:
                self._applying = False
                self._changed.notify_all()

    def soon(self) -> None:
        """Ask for a reload without waiting (a signal handler does): applied at once, or coalesced into the next."""
        with self._changed:
            if self._wanted or self._busy():
                self._fold()
            else:
                self._wanted = True
                self._wake()

    def close(self) -> None:
        """Stop the reloads thread; a coalesced reload not yet applied is dropped."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def collect(self) -> Iterable[Metric]:
        """Expose the count of coalesced requests."""
        spec = BY_NAME["gunicorn_cert_exporter_config_reloads_coalesced"]
        with self._changed:
            return [CounterMetricFamily(spec.name, spec.help, value=self._coalesced)]

    def _busy(self) -> bool:
        return self._applying or self._clock() - self._last < self._every

    def _claim(self) -> None:
        """Start the next reload: it covers every request coalesced so far."""
        self._applying, self._wanted, self._folded, self._last = True, False, 0, self._clock()

    def _fold(self) -> None:
        self._wanted = True
        self._folded += 1
        self._coalesced += 1
        self._wake()

    def _wake(self) -> None:
        if not self._started and not self._closed:
            # Marked before any call: a nested signal handler runs only at a call, and must not start a second one.
            self._started = True
            threading.Thread(target=self._loop, name="config-reloads", daemon=True).start()
        self._changed.notify_all()

    def _loop(self) -> None:
        while (folded := self._next()) is not None:
            if folded:
                _log.info("config reload requests coalesced into one reload", extra={"requests": folded})
            try:
                self._apply()
            except Exception:  # noqa: BLE001  (a bug in one reload must not end the thread that applies the next)
                _log.exception("config reload failed")
            finally:
                with self._changed:
                    self._applying = False
                    self._changed.notify_all()

    def _next(self) -> int | None:
        """Wait until the wanted reload may start and claim it; return how many requests it folds, or None."""
        with self._changed:
            while not self._closed:
                if not self._wanted or self._applying:
                    self._changed.wait()
                    continue
                wait = self._last + self._every - self._clock()
                if wait > 0:
                    self._changed.wait(wait)
                    continue
                folded = self._folded
                self._claim()
                return folded
        return None
