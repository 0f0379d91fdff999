"""FetchPool, the base of the ARI and revocation pools: woken by scans, one fetch per key, bugs never lost."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from gunicorn_cert_exporter.model import FileResult, Snapshot
from gunicorn_cert_exporter.scanning.fetch_pool import FetchPool
from tests.support import eventually

_log = logging.getLogger("gunicorn_cert_exporter.test_pool")


class Pool(FetchPool):
    """A pool whose pass runs ``work`` (a test's), counting passes."""

    def __init__(self, work: Callable[[Pool], None] = lambda _pool: None) -> None:
        super().__init__(workers=2, name="test", log=_log)
        self.passes = 0
        self._work = work

    def _enabled(self) -> bool:
        return True

    def _pass(self) -> None:
        self._take_queued()
        self.passes += 1
        self._work(self)

    def start(self, key: str, work: Callable[[], None]) -> None:
        with self._lock:
            self._submit(key, work)


@pytest.fixture
def pools() -> Iterator[list[Pool]]:
    made: list[Pool] = []
    yield made
    for pool in made:
        pool.stop()


def test_a_bug_in_a_pass_is_logged_with_its_traceback_and_the_next_pass_runs(
    pools: list[Pool], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(pool: Pool) -> None:
        if pool.passes == 1:
            raise RuntimeError("a bug in the first pass")

    pool = Pool(broken)
    pools.append(pool)
    pool.wake()
    eventually(lambda: any(r.message == "test work failed" for r in caplog.records), "the bug logged")
    (record,) = [r for r in caplog.records if r.message == "test work failed"]
    assert record.exc_info is not None and "a bug in the first pass" in str(record.exc_info[1])
    pool.wake()
    eventually(lambda: pool.passes == 2, "a second pass after the broken one")


def test_a_fetch_that_raises_is_logged_and_can_start_again(pools: list[Pool], caplog: pytest.LogCaptureFixture) -> None:
    pool = Pool()
    pools.append(pool)
    calls: list[int] = []

    def fetch() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("a bug in a fetch")

    pool.start("k", fetch)
    eventually(lambda: any(r.message == "test work failed" for r in caplog.records), "the fetch's bug logged")
    eventually(lambda: not pool._pending(), "the failed fetch no longer in flight")
    pool.start("k", fetch)
    eventually(lambda: len(calls) == 2, "the same key fetched again")


def test_one_fetch_per_key_at_a_time_and_each_end_wakes_a_pass(pools: list[Pool]) -> None:
    pool = Pool()
    pools.append(pool)
    release = threading.Event()
    started: list[str] = []

    def held(name: str) -> Callable[[], None]:
        def fetch() -> None:
            started.append(name)
            release.wait(30)

        return fetch

    pool.start("k", held("first"))
    eventually(lambda: started == ["first"], "the first fetch running")
    pool.start("k", held("second"))  # the same key while the first runs: not started
    pool.start("other", held("other"))  # another key: started beside it (two workers)
    eventually(lambda: "other" in started, "the other key's fetch running")
    assert started == ["first", "other"] and pool.fetches == 2
    release.set()
    eventually(lambda: not pool._pending(), "both fetches ended")
    eventually(lambda: pool.passes >= 1, "a pass woken by the fetches' end")


def test_a_scan_wakes_a_pass_only_when_it_published_new_results() -> None:
    class Counting(Pool):
        wakes = 0

        def wake(self) -> None:
            self.wakes += 1

    pool = Counting()
    try:
        snap = Snapshot(files=(FileResult("/a.pem"),))
        pool.observe(snap)
        assert pool.wakes == 1
        pool.observe(replace(snap, ari=()))  # the pool's own publish: the same scan results, another snapshot
        assert pool.wakes == 1
        pool.observe(replace(snap, files=(FileResult("/a.pem"),)))  # a new files scan, equal in value
        assert pool.wakes == 2
    finally:
        pool.stop()
