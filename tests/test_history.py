"""reload/history.py: attempts written atomically, read at start; a corrupt file means waiting a cooldown."""

from __future__ import annotations

import os
import time
from pathlib import Path

from gunicorn_cert_exporter.config import GunicornTarget
from gunicorn_cert_exporter.metrics.collector import SnapshotCollector
from gunicorn_cert_exporter.scanning.store import Store
from gunicorn_cert_exporter.sources.endpoints import Prober
from gunicorn_cert_exporter.sources.files import FileScanner
from gunicorn_cert_exporter.targets.history import History
from gunicorn_cert_exporter.targets.watcher import TargetWatcher


def test_attempts_survive_a_new_history_on_the_same_directory(tmp_path: Path) -> None:
    first = History(str(tmp_path))
    assert first.load("api", now=1000.0).attempts == ()
    assert first.record("api", (900.0, 1000.0)) is None
    again = History(str(tmp_path)).load("api", now=2000.0)
    assert again.attempts == (900.0, 1000.0) and again.problem is None
    assert History(str(tmp_path)).load("other", now=2000.0).attempts == ()  # one file per target
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left behind


def test_a_corrupt_or_foreign_state_file_counts_as_an_attempt_now(tmp_path: Path) -> None:
    history = History(str(tmp_path))
    for garbage in (b"{not json", b'{"target": "someone-else", "attempts": []}', b'{"attempts": ["x"]}', b"\xff" * 10):
        Path(history.path("api")).write_bytes(garbage)
        loaded = history.load("api", now=5000.0)
        assert loaded.attempts == (5000.0,)  # cooldown and max_per_hour start now: no reload for a while
        assert loaded.problem and "api" in loaded.problem


def test_times_that_would_switch_the_limits_off_are_corruption(tmp_path: Path) -> None:
    """NaN compares false with everything (no cooldown would ever hold); deep nesting raised RecursionError."""
    history = History(str(tmp_path))
    for garbage in (
        b'{"target": "api", "attempts": [NaN]}',
        b'{"target": "api", "attempts": [Infinity]}',
        b'{"target": "api", "attempts": [true]}',
        b"[" * 60_000,
    ):
        Path(history.path("api")).write_bytes(garbage)
        loaded = history.load("api", now=5000.0)
        assert loaded.attempts == (5000.0,) and loaded.problem


def test_an_attempt_written_with_the_clock_ahead_counts_as_made_now(tmp_path: Path) -> None:
    history = History(str(tmp_path))
    assert history.record("api", (9_000_000.0,)) is None  # a year ahead of "now" below
    assert history.load("api", now=5000.0).attempts == (5000.0,)


def test_an_unreadable_state_file_is_reported_and_conservative(tmp_path: Path) -> None:
    history = History(str(tmp_path))
    os.mkfifo(history.path("api"))  # a FIFO: never opened for a blocking read
    loaded = history.load("api", now=7.0)
    assert loaded.attempts == (7.0,) and loaded.problem


def test_a_write_that_fails_is_reported(tmp_path: Path) -> None:
    history = History(str(tmp_path / "missing"))
    assert history.record("api", (1.0,)) is not None


def test_without_a_directory_history_lives_in_memory() -> None:
    history = History(None)
    assert not history.persistent
    assert history.record("api", (1.0,)) is None and history.load("api", now=2.0).attempts == ()


def test_a_corrupt_state_file_shows_on_the_target_and_in_the_metrics(tmp_path: Path) -> None:
    history = History(str(tmp_path))
    Path(history.path("api")).write_text("{garbage")
    watcher = TargetWatcher(prober=Prober(), scanner=FileScanner(clock=time.time, max_size=1 << 20), history=history)
    target = GunicornTarget(
        name="api", cert_file="c.pem", key_file="k.pem", endpoint="127.0.0.1:9", pid=999999999, timeout=1
    )
    state = watcher.scan([target])[0]
    assert "api" in state.history_problem
    store = Store()
    store.update(targets=(state,))
    families = {f.name: f for f in SnapshotCollector(lambda: store.snapshot).collect()}
    assert families["gunicorn_cert_reload_history_error"].samples[0].value == 1.0
