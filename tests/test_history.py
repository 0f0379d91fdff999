"""targets/history.py: attempts written atomically, read at start; a corrupt file means waiting a cooldown."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gunicorn_cert_exporter.config import GunicornTarget, load_file
from gunicorn_cert_exporter.metrics.collector import SnapshotCollector
from gunicorn_cert_exporter.scanning.scans import Scans
from gunicorn_cert_exporter.scanning.store import Store
from gunicorn_cert_exporter.sources.endpoints import Prober
from gunicorn_cert_exporter.sources.files import FileScanner
from gunicorn_cert_exporter.targets.history import History, Loaded
from gunicorn_cert_exporter.targets.watcher import TargetWatcher
from gunicorn_cert_exporter.vocabulary import Action
from tests.support import PKI, ControlServer, Issued
from tests.test_boundary import Rig


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
    for garbage in (
        b"{not json",
        b'{"version": 1, "target": "someone-else", "attempts": []}',
        b'{"attempts": ["x"]}',
        b"\xff" * 10,
    ):
        Path(history.path("api")).write_bytes(garbage)
        loaded = history.load("api", now=5000.0)
        assert loaded.attempts == (5000.0,)  # cooldown and max_per_hour start now: no reload for a while
        assert loaded.problem and "api" in loaded.problem


def test_times_that_would_switch_the_limits_off_are_corruption(tmp_path: Path) -> None:
    """NaN compares false with everything (no cooldown would ever hold); deep nesting raised RecursionError."""
    history = History(str(tmp_path))
    for garbage in (
        b'{"version": 1, "target": "api", "attempts": [NaN]}',
        b'{"version": 1, "target": "api", "attempts": [Infinity]}',
        b'{"version": 1, "target": "api", "attempts": [true]}',
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


HUGE_ATTEMPT = "1" + "0" * 400  # an integer of 1e400: math.isfinite() of it raised OverflowError


@pytest.mark.parametrize(
    "body",
    [
        f'{{"version": 1, "target": "api", "attempts": [{HUGE_ATTEMPT}]}}',
        '{"version": 1, "target": "api", "attempts": [1e400]}',
        '{"version": 1, "target": "api", "attempts": [-1e300]}',
        f'{{"version": 1, "target": "api", "attempts": [{5000.0 - 101 * 365.25 * 86400}]}}',  # 101 years ago
        f'{{"version": 1, "target": "api", "attempts": [{5000.0 + 101 * 365.25 * 86400}]}}',  # in 101 years
        '{"version": 2, "target": "api", "attempts": [4000.0]}',  # a version this exporter does not know
        '{"target": "api", "attempts": [4000.0]}',
        '{"version": 1, "target": "api", "attempts": "4000"}',
    ],
)
def test_a_number_out_of_range_is_corruption_with_a_short_reason(tmp_path: Path, body: str) -> None:
    history = History(str(tmp_path))
    Path(history.path("api")).write_text(body)
    loaded = history.load("api", now=5000.0)
    assert loaded.attempts == (5000.0,) and loaded.problem  # a cooldown from now: conservative
    assert len(loaded.problem) < 400 and HUGE_ATTEMPT not in loaded.problem


def test_a_sane_file_within_a_century_of_now_is_read_as_written(tmp_path: Path) -> None:
    """The bounds above refuse only what no clock wrote: a year-old attempt and one a day ahead are kept."""
    history = History(str(tmp_path))
    now = 2_000_000_000.0
    Path(history.path("api")).write_text(
        f'{{"version": 1, "target": "api", "attempts": [{now - 3.2e7}, {now + 86400}]}}'
    )
    assert history.load("api", now=now) == Loaded((now - 3.2e7, now))


def _scans(rig: Rig, tmp_path: Path) -> tuple[Scans, Store, CollectorRegistry]:
    (tmp_path / "config.yaml").write_text(rig.config(cooldown="10m"))
    store = Store()
    registry = CollectorRegistry(auto_describe=True)
    registry.register(SnapshotCollector(lambda: store.snapshot))
    history = History(str(tmp_path / "state"))
    scans = Scans(config=load_file(str(tmp_path / "config.yaml")), store=store, prober=Prober(), history=history)
    return scans, store, registry


@pytest.mark.parametrize("crafted", [True, False])
def test_a_crafted_history_file_blocks_its_targets_reloads_for_a_cooldown_and_nothing_else(
    tmp_path: Path, pki: PKI, root: Issued, crafted: bool
) -> None:
    """Issue 25 item 4: the target is scanned as usual (master proven, endpoint on its address, drift seen) with
    ``history_error 1`` and a cooldown; without the crafted file, the same rig reloads (what the file prevents)."""
    rig = Rig(tmp_path, pki, root)
    server = ControlServer(rig.socket, pid=os.getpid(), port=rig.tls.port, started=time.time() - 3600)
    (tmp_path / "state").mkdir()
    if crafted:
        body = f'{{"version": 1, "target": "api", "attempts": [{HUGE_ATTEMPT}]}}'
        Path(History(str(tmp_path / "state")).path("api")).write_text(body)
    try:
        scans, store, registry = _scans(rig, tmp_path)
        scans.run_all()
    finally:
        server.close()
        rig.tls.close()
    target = store.snapshot.targets[0]
    value = registry.get_sample_value
    assert value("gunicorn_cert_reload_history_error", {"target": "api"}) == (1.0 if crafted else 0.0)
    assert target.master.up and [a.address for a in target.endpoint.addresses] == ["127.0.0.1"]
    assert value("gunicorn_cert_fingerprint_mismatch", {"target": "api", "address": "127.0.0.1"}) == 1.0
    other = {"path": str(tmp_path / "other.pem"), "index": "0", "entry": ""}
    assert value("gunicorn_cert_file_not_after_timestamp_seconds", other) is not None  # other sources publish
    if crafted:
        assert target.decision is Action.BLOCKED and target.decision_reason.startswith("cooldown")
        assert "reload" not in server.commands
    else:
        assert server.commands.count("reload") == 1
