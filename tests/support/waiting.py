"""Waiting for a condition, not sleeping (``eventually``); bounding what would otherwise never end (``finishes``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T | None], what: str, timeout: float = 60.0, every: float = 0.2) -> T:
    """Poll ``check`` until it returns something truthy (OSError counts as not yet); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def finishes(work: Callable[[], T], what: str, *, within: float = 60.0) -> T:
    """Run ``work`` in a thread and return its result; fail if it has not returned after ``within`` seconds.

    For work that, unprotected, never returns (a blocking FIFO open, a symlink loop, a wait for a stuck scan): that
    it returns at all is the proof, and ``within`` (far above its normal cost) only makes the failure quick.
    """
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(work())
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name=f"finishes: {what}", daemon=True)
    thread.start()
    thread.join(within)
    if thread.is_alive():
        raise AssertionError(f"{what} had not returned after {within:.0f}s")
    if errors:
        raise errors[0]
    return results[0]


def wait_until(instant: float, what: str, *, clock: Callable[[], float] = time.time) -> None:
    """Wait until ``clock`` has passed ``instant``: where the code under test compares times it reads itself
    (a file's mtime with a worker's start, a drift's age with ``reload.after``), time passing is the condition."""
    eventually(lambda: clock() > instant, what, every=0.05)
