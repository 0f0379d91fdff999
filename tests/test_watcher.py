"""targets/ with a real Gunicorn: rotation per worker class, drift, safe HUP, confirmation, refusals."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest
from prometheus_client import CollectorRegistry

from gunicorn_cert_exporter import status
from gunicorn_cert_exporter.bands import Severity, Thresholds
from gunicorn_cert_exporter.config import Config, EndpointConfig, GunicornTarget, ReloadConfig
from gunicorn_cert_exporter.config_parts import ScanConfig
from gunicorn_cert_exporter.metrics.collector import SnapshotCollector
from gunicorn_cert_exporter.model import AddressResult, EndpointResult, TargetState
from gunicorn_cert_exporter.reasons import EndpointReason, MasterReason
from gunicorn_cert_exporter.runbook import PreviousLeaf
from gunicorn_cert_exporter.scanning.scans import Scans
from gunicorn_cert_exporter.scanning.store import Store
from gunicorn_cert_exporter.sources import certs, gunicorn
from gunicorn_cert_exporter.sources.endpoints import Prober
from gunicorn_cert_exporter.sources.files import FileScanner
from gunicorn_cert_exporter.targets.history import History
from gunicorn_cert_exporter.targets.watcher import TargetWatcher
from tests.support import PKI, ControlServer, Gunicorn, Issued, UnixServer, eventually
from tests.support.gunicorn import after_start_of
from tests.support.waiting import wait_until

RELOAD = ReloadConfig(enabled=True, after=0, cooldown=600, max_per_hour=2, verify_timeout=20)


class Recorder:
    """The real signal sender, recording what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, int]] = []

    def __call__(self, identity: gunicorn.MasterIdentity, signum: int) -> None:
        self.sent.append((identity.pid, signum))
        gunicorn.send_signal(identity, signum)


def rotate(directory: Path, leaf: Issued, key: Issued | None = None) -> None:
    """Write key then cert, each renamed into place (what certbot-style renewers do)."""
    for name, data in (("key.pem", (key or leaf).key_pem), ("cert.pem", leaf.cert_pem)):
        tmp = directory / f"{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, directory / name)


class Setup:
    def __init__(
        self,
        directory: Path,
        pki: PKI,
        root: Issued,
        worker_class: str,
        reload: ReloadConfig,
        sender: gunicorn.SignalSender | None = None,
    ) -> None:
        self.directory, self.pki, self.root = directory, pki, root
        self.first = pki.leaf(root)
        rotate(directory, self.first)
        (directory / "ca.pem").write_bytes(root.cert_pem)
        self.server = Gunicorn(
            directory, worker_class=worker_class, cert=directory / "cert.pem", key=directory / "key.pem"
        )
        self.target = GunicornTarget(
            name="api",
            cert_file=str(directory / "cert.pem"),
            key_file=str(directory / "key.pem"),
            endpoint=self.server.address,
            server_name="localhost",
            ca_file=str(directory / "ca.pem"),
            pidfile=str(self.server.pidfile),
            reload=reload,
        )
        self.sender = Recorder()
        self.watcher = TargetWatcher(
            prober=Prober(), scanner=FileScanner(clock=time.time, max_size=1 << 20), sender=sender or self.sender
        )

    def scan(self) -> TargetState:
        return self.watcher.scan([self.target])[0]

    def served(self) -> str:
        leaf = Prober().probe(self.target.as_endpoint()).addresses[0].leaf
        assert leaf is not None
        return leaf.fingerprint_sha256


class MakeSetup(Protocol):
    def __call__(
        self, worker_class: str, reload: ReloadConfig = ..., sender: gunicorn.SignalSender | None = ...
    ) -> Setup: ...


@pytest.fixture
def setup(tmp_path: Path, pki: PKI, root: Issued) -> Iterator[MakeSetup]:
    made: list[Setup] = []

    def make(worker_class: str, reload: ReloadConfig = RELOAD, sender: gunicorn.SignalSender | None = None) -> Setup:
        made.append(Setup(tmp_path, pki, root, worker_class, reload, sender))
        return made[-1]

    yield make
    for s in made:
        s.server.stop()


@pytest.mark.integration
@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_per_connection_classes_serve_the_new_cert_without_a_reload(setup: MakeSetup, worker_class: str) -> None:
    s: Setup = setup(worker_class)
    assert s.scan().master.up
    new = s.pki.leaf(s.root)
    rotate(s.directory, new)
    state = s.scan()
    assert s.served() == new.fingerprint
    assert [d.mismatch for d in state.drift] == [False]
    assert s.sender.sent == [] and state.reload_signals == 0


@pytest.mark.integration
@pytest.mark.parametrize("worker_class", ["gevent", "asgi", "uvicorn_worker.UvicornWorker"])
def test_per_worker_classes_drift_then_one_safe_hup_clears_it(setup: MakeSetup, worker_class: str) -> None:
    s: Setup = setup(worker_class, RELOAD.model_copy(update={"after": 1.0}))
    before = s.scan()
    assert before.master.up and before.key_match is True and before.last_reload is not None
    after_start_of(s.server.process.pid)  # the renewal happens after the workers started, as in real life
    new = s.pki.leaf(s.root)
    rotate(s.directory, new)
    drifting = s.scan()  # drift seen, but younger than reload.after: no signal yet
    assert [d.mismatch for d in drifting.drift] == [True]
    assert s.sender.sent == [] and s.served() == s.first.fingerprint
    assert drifting.drift[0].since is not None
    wait_until(drifting.drift[0].since + 1.0, "the drift to be reload.after old")  # the watcher's clock: time.time
    after = s.scan()  # every rule holds now: one HUP, then re-probed until the new leaf is served
    assert s.sender.sent == [(s.server.process.pid, signal.SIGHUP)]
    assert s.served() == new.fingerprint
    assert [d.mismatch for d in after.drift] == [False]
    assert (after.reload_signals, after.reload_failures) == (1, 0)
    assert after.last_reload is not None and after.last_reload > before.last_reload
    assert after.master.pid == before.master.pid
    again = s.scan()
    assert s.sender.sent == [(s.server.process.pid, signal.SIGHUP)] and again.reload_signals == 1


@pytest.mark.integration
def test_a_key_that_does_not_match_never_gets_a_hup(setup: MakeSetup) -> None:
    s: Setup = setup("gevent")
    s.scan()
    stranger = s.pki.leaf(s.root)
    rotate(s.directory, s.pki.leaf(s.root), key=stranger)  # half-rotated: new cert, someone else's key
    for _ in range(3):
        state = s.scan()
        assert state.key_match is False and [d.mismatch for d in state.drift] == [True]
    assert s.sender.sent == []
    assert s.served() == s.first.fingerprint  # Gunicorn keeps serving the old pair
    assert s.server.process.poll() is None


@pytest.mark.integration
@pytest.mark.parametrize("case", ["stale", "stranger", "worker"])
def test_no_signal_for_a_pidfile_that_does_not_name_the_master(setup: MakeSetup, case: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    s: Setup = setup("gevent")
    master = s.scan().master
    fake = tmp_path / "fake.pid"
    other = None
    if case == "stale":
        done = subprocess.Popen([sys.executable, "-c", "pass"])
        done.wait()
        fake.write_text(str(done.pid))
    elif case == "stranger":
        other = subprocess.Popen(["sleep", "60"])
        fake.write_text(str(other.pid))
    else:
        fake.write_text(str(master.workers[0].pid))
    s.target = s.target.model_copy(update={"pidfile": str(fake)})
    try:
        rotate(s.directory, s.pki.leaf(s.root))
        for _ in range(2):
            state = s.scan()
            assert not state.master.up and [d.mismatch for d in state.drift] == [True]
        assert s.sender.sent == []
        assert other is None or other.poll() is None
    finally:
        if other is not None:
            other.kill()
            other.wait()


@pytest.mark.integration
def test_dry_run_logs_and_sends_nothing(setup: MakeSetup, caplog: pytest.LogCaptureFixture) -> None:
    s: Setup = setup("gevent", RELOAD.model_copy(update={"dry_run": True}))
    s.scan()
    after_start_of(s.server.process.pid)
    rotate(s.directory, s.pki.leaf(s.root))
    with caplog.at_level("INFO", logger="gunicorn_cert_exporter.reload"):
        s.scan()
    assert s.sender.sent == []
    assert any(getattr(r, "outcome", "") == "dry_run" for r in caplog.records)


@pytest.mark.integration
def test_a_reload_that_is_not_confirmed_counts_a_failure_and_never_loops(setup: MakeSetup) -> None:
    swallowed: list[int] = []
    s: Setup = setup(
        "gevent",
        RELOAD.model_copy(update={"verify_timeout": 1.0}),
        sender=lambda identity, signum: swallowed.append(signum),  # a HUP that is lost on the way
    )
    s.scan()
    after_start_of(s.server.process.pid)
    rotate(s.directory, s.pki.leaf(s.root))
    failed = s.scan()
    assert swallowed == [signal.SIGHUP]
    assert (failed.reload_signals, failed.reload_failures) == (1, 1)
    assert [d.mismatch for d in failed.drift] == [True]
    for _ in range(3):  # cooldown: the drift remains, no second signal
        assert s.scan().reload_signals == 1
    assert swallowed == [signal.SIGHUP]


@pytest.mark.integration
def test_drift_is_published_before_the_reload_is_confirmed(setup: MakeSetup) -> None:
    from gunicorn_cert_exporter.config import Config
    from gunicorn_cert_exporter.scanning.scans import Scans
    from gunicorn_cert_exporter.scanning.store import Store

    s: Setup = setup("gevent")
    store = Store()
    published_at_signal: list[list[bool]] = []

    def sender(identity: gunicorn.MasterIdentity, signum: int) -> None:
        published_at_signal.append([d.mismatch for t in store.snapshot.targets for d in t.drift])
        gunicorn.send_signal(identity, signum)

    scans = Scans(config=Config(gunicorn=[s.target]), store=store, prober=Prober(), sender=sender)
    scans.scan_targets()
    after_start_of(s.server.process.pid)
    rotate(s.directory, s.pki.leaf(s.root))
    scans.scan_targets()
    assert published_at_signal == [[True]]  # what /metrics showed while the reload was being confirmed
    assert [d.mismatch for t in store.snapshot.targets for d in t.drift] == [False]
    assert store.snapshot.targets[0].reload_signals == 1


@pytest.mark.integration
def test_a_signal_that_fails_still_counts_toward_cooldown(setup: MakeSetup) -> None:
    attempts: list[int] = []

    def refused(identity: gunicorn.MasterIdentity, signum: int) -> None:
        attempts.append(signum)
        raise PermissionError(1, "Operation not permitted")

    s: Setup = setup("gevent", sender=refused)
    s.scan()
    after_start_of(s.server.process.pid)
    rotate(s.directory, s.pki.leaf(s.root))
    for _ in range(3):
        state = s.scan()
    assert attempts == [signal.SIGHUP]  # one attempt, then cooldown: no retry on every scan
    assert (state.reload_signals, state.reload_failures) == (0, 1)


# Reloads through a fake control socket: a master that always serves the old leaf, so every rule allows a reload.
EAGER = ReloadConfig(enabled=True, after=0, cooldown=0, max_per_hour=60, verify_timeout=2)


class OldLeafProber(Prober):
    """Every endpoint serves ``leaf`` on 127.0.0.1; ``before`` runs first with the endpoint (a slow probe, a
    config reload arriving meanwhile, a parser bug)."""

    def __init__(self, leaf: Issued, before: Callable[[EndpointConfig], None] = lambda _config: None) -> None:
        super().__init__()
        self.leaf, self.before = certs.cert_facts(leaf.cert), before

    def probe(self, config: EndpointConfig) -> EndpointResult:
        self.before(config)
        served = AddressResult(address="127.0.0.1", chain=(self.leaf,))
        return EndpointResult(endpoint=config.address, server_name=config.sni or "", addresses=(served,))  # as Prober


class SocketRig:
    """A target whose files hold a new leaf while its master (a fake control socket) serves the old one."""

    def __init__(self, directory: Path, pki: PKI, root: Issued) -> None:
        self.old = pki.leaf(root)
        rotate(directory, pki.leaf(root))
        # This process listens: the kernel names it, so the reply must name it too.
        self.server = ControlServer(directory / "ctl", pid=os.getpid(), port=8443, started=time.time() - 3600)
        self.target = GunicornTarget(
            name="api",
            cert_file=str(directory / "cert.pem"),
            key_file=str(directory / "key.pem"),
            endpoint="127.0.0.1:8443",
            control_socket=str(directory / "ctl"),
            timeout=1.0,
            reload=EAGER,
        )

    def watcher(self, history: History | None = None) -> TargetWatcher:
        scanner = FileScanner(clock=time.time, max_size=1 << 20)
        return TargetWatcher(prober=OldLeafProber(self.old), scanner=scanner, history=history)

    @property
    def reloads(self) -> int:
        return self.server.commands.count("reload")


@pytest.fixture
def socket_rig(tmp_path: Path, pki: PKI, root: Issued) -> Iterator[SocketRig]:
    rig = SocketRig(tmp_path, pki, root)
    yield rig
    rig.server.close()


def test_a_scan_overlapping_a_reload_of_the_same_target_joins_it_and_sends_nothing(socket_rig: SocketRig) -> None:
    """A run that starts while an earlier run still confirms the target's reload (verify_timeout may outlast the
    interval) must not decide again: it joins the earlier look (one look per target in flight), one reload."""
    watcher = socket_rig.watcher()
    firsts: list[tuple[TargetState, ...]] = []
    first = threading.Thread(target=lambda: firsts.append(watcher.scan([socket_rig.target])))
    first.start()
    try:
        eventually(lambda: socket_rig.reloads == 1, "the first run's reload", timeout=10, every=0.02)
        second = watcher.scan([socket_rig.target])[0]
    finally:
        first.join()
    assert second is firsts[0][0]
    assert socket_rig.reloads == 1


def test_a_scan_of_another_watcher_overlapping_a_reload_waits_and_sends_nothing(socket_rig: SocketRig) -> None:
    """After a config reload the new watcher shares the memory: it must not decide while the old one reloads."""
    watcher = socket_rig.watcher()
    successor = socket_rig.watcher()
    first = threading.Thread(target=watcher.scan, args=([socket_rig.target],))
    first.start()
    try:
        eventually(lambda: socket_rig.reloads == 1, "the first run's reload", timeout=10, every=0.02)
        successor.inherit(watcher)
        second = successor.scan([socket_rig.target])[0]
    finally:
        first.join()
    assert (second.decision, second.decision_reason) == ("wait", "another scan is reloading this target")
    assert socket_rig.reloads == 1


def test_a_config_reload_during_a_targets_scan_stops_its_reload(socket_rig: SocketRig) -> None:
    """The operator turns reload off and reloads the exporter's config while a targets scan is probing: that scan,
    which decided with the old rules, must neither reload the master nor publish its state."""
    store = Store()
    scans: list[Scans] = []

    def operator_reloads(_config: EndpointConfig) -> None:
        scans[0].retire()  # what Service.reload does to the scans of the replaced config

    prober = OldLeafProber(socket_rig.old, before=operator_reloads)
    scans.append(Scans(config=Config(gunicorn=[socket_rig.target]), store=store, prober=prober))
    scans[0].scan_targets()
    assert socket_rig.reloads == 0
    assert store.snapshot.targets == ()


def test_one_target_that_fails_unexpectedly_never_stops_the_others(socket_rig: SocketRig) -> None:
    """An exception on one target (a parser or history bug) becomes that target's state; the others publish."""
    broken = socket_rig.target.model_copy(update={"name": "broken", "endpoint": "127.0.0.2:8443"})
    quiet = socket_rig.target.model_copy(update={"reload": EAGER.model_copy(update={"enabled": False})})

    def parser_bug(config: EndpointConfig) -> None:
        if config.address == "127.0.0.2:8443":
            raise RuntimeError("parser bug")

    store = Store()
    prober = OldLeafProber(socket_rig.old, before=parser_bug)
    Scans(config=Config(gunicorn=[broken, quiet]), store=store, prober=prober).scan_targets()
    states = {t.name: t for t in store.snapshot.targets}
    assert states["api"].master.up and states["api"].drift[0].mismatch
    assert not states["broken"].master.up and states["broken"].decision == "error"
    assert "RuntimeError: parser bug" in states["broken"].decision_reason


# The series of a target that hold whatever its state: a scan that fails must keep every one the last scan had.
KEPT = (
    "gunicorn_cert_endpoint_addresses",
    "gunicorn_cert_endpoint_up",
    "gunicorn_cert_fingerprint_mismatch",
    "gunicorn_cert_key_match",
    "gunicorn_cert_target_file_not_after_timestamp_seconds",
    "gunicorn_cert_master_up",
    "gunicorn_cert_master_info",
    "gunicorn_cert_master_pid",
    "gunicorn_cert_master_start_timestamp_seconds",
    "gunicorn_cert_master_workers",
    "gunicorn_cert_last_reload_timestamp_seconds",
    "gunicorn_cert_reload_signals_total",
    "gunicorn_cert_reload_failures_total",
    "gunicorn_cert_reload_history_error",
)


def series(registry: CollectorRegistry, names: tuple[str, ...]) -> set[tuple[str, frozenset[tuple[str, str]]]]:
    return {
        (sample.name, frozenset(sample.labels.items()))
        for family in registry.collect()
        for sample in family.samples
        if sample.name in names
    }


class FailingRig:
    """``socket_rig``'s target, named by host (its SNI is the host), with the master proven through ``channel``, a
    prober that raises once ``broken`` is set, and a registry that reads the store the targets scan publishes to."""

    def __init__(self, rig: SocketRig, channel: str, pidfile: Path) -> None:
        pidfile.write_text(f"{os.getpid()}\n")  # this test's process: a pid that is no Gunicorn (not_gunicorn)
        by_channel: dict[str, dict[str, object]] = {
            "control_socket": {},
            "pidfile": {"control_socket": None, "pidfile": str(pidfile)},
            "pid": {"control_socket": None, "pid": os.getpid()},
        }
        sources = by_channel[channel]
        quiet = EAGER.model_copy(update={"enabled": False})
        self.target = rig.target.model_copy(update={"endpoint": "localhost:8443", "reload": quiet, **sources})
        self.broken = False
        self.store = Store()
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(SnapshotCollector(lambda: self.store.snapshot))
        prober = OldLeafProber(rig.old, before=self._maybe_raise)
        self.scans = Scans(config=Config(gunicorn=[self.target]), store=self.store, prober=prober)

    def _maybe_raise(self, _config: EndpointConfig) -> None:
        if self.broken:
            raise RuntimeError("parser bug")


@pytest.mark.parametrize("channel", ["control_socket", "pidfile", "pid"])
def test_a_target_whose_scan_fails_keeps_its_series_down_with_scan_failed(
    socket_rig: SocketRig, channel: str, tmp_path: Path
) -> None:
    """SPEC §5: a target whose scan raises keeps the series of its last scan. Its addresses (named as the prober
    names them: server_name is the host) are down with reason scan_failed and no drift (unknown, not a mismatch);
    its master is down with reason scan_failed, on the channel configured, under the pid last seen."""
    rig = FailingRig(socket_rig, channel, tmp_path / "app.pid")
    get = rig.registry.get_sample_value
    where = {"endpoint": "localhost:8443", "server_name": "localhost", "address": "127.0.0.1"}
    drift_at = {"target": "api", "address": "127.0.0.1"}
    api = {"target": "api"}
    rig.scans.scan_targets()
    assert get("gunicorn_cert_endpoint_up", where) == 1
    assert get("gunicorn_cert_fingerprint_mismatch", drift_at) == 1  # the files hold a newer leaf than is served
    assert get("gunicorn_cert_master_info", {**api, "channel": channel}) == 1
    pid = get("gunicorn_cert_master_pid", api)
    assert pid == os.getpid()  # the fake control socket runs in this process, as the pidfile names it
    before = series(rig.registry, KEPT)

    rig.broken = True
    rig.scans.scan_targets()
    assert rig.store.snapshot.targets[0].decision == "error"
    assert before <= series(rig.registry, KEPT)
    assert get("gunicorn_cert_endpoint_up", where) == 0
    assert get("gunicorn_cert_endpoint_error", {**where, "reason": "scan_failed"}) == 1
    assert get("gunicorn_cert_endpoint_info", {**where, "index": "0"}) is None  # nothing was served this scan
    assert get("gunicorn_cert_fingerprint_mismatch", drift_at) == 0
    assert get("gunicorn_cert_fingerprint_mismatch_since_timestamp_seconds", drift_at) is None
    assert get("gunicorn_cert_key_match", api) == 1  # the files were read; their pairing is still known
    assert get("gunicorn_cert_master_up", api) == 0
    assert get("gunicorn_cert_master_error", {**api, "reason": "scan_failed"}) == 1
    assert get("gunicorn_cert_master_info", {**api, "channel": channel}) == 1
    assert get("gunicorn_cert_master_pid", api) == pid
    assert socket_rig.reloads == 0

    rig.broken = False  # fixed: the next scan shows the target as it is again
    rig.scans.scan_targets()
    assert get("gunicorn_cert_endpoint_up", where) == 1
    assert get("gunicorn_cert_endpoint_error", {**where, "reason": "scan_failed"}) is None
    assert get("gunicorn_cert_master_error", {**api, "reason": "scan_failed"}) is None


def test_a_target_whose_first_scan_fails_shows_its_endpoint_down_without_an_address(
    socket_rig: SocketRig, tmp_path: Path
) -> None:
    """With no address known yet, the endpoint is reported as a name that never resolved is: address="" down."""
    rig = FailingRig(socket_rig, "control_socket", tmp_path / "app.pid")
    rig.broken = True
    rig.scans.scan_targets()
    get = rig.registry.get_sample_value
    where = {"endpoint": "localhost:8443", "server_name": "localhost", "address": ""}
    assert get("gunicorn_cert_endpoint_up", where) == 0
    assert get("gunicorn_cert_endpoint_error", {**where, "reason": "scan_failed"}) == 1
    assert get("gunicorn_cert_master_error", {"target": "api", "reason": "scan_failed"}) == 1
    assert get("gunicorn_cert_master_up", {"target": "api"}) == 0


def test_a_master_restarted_with_the_same_pid_gets_no_reload_through_the_socket(socket_rig: SocketRig) -> None:
    """In a container a restarted master is pid 1 again: between the decision and the send the socket's master
    has the proven pid but started later, so no reload is sent and the attempt counts as failed."""

    class RestartMeanwhile(History):
        def record(
            self, target: str, attempts: tuple[float, ...], previous: tuple[PreviousLeaf, ...] = ()
        ) -> str | None:
            socket_rig.server.started = time.time() - 5  # the same pid, started 5 s ago
            return super().record(target, attempts, previous)

    state = socket_rig.watcher(history=RestartMeanwhile(None)).scan([socket_rig.target])[0]
    assert state.decision == "signal"
    assert socket_rig.reloads == 0 and state.reload_failures == 1 and state.reload_signals == 0


def test_a_silent_control_socket_shows_a_reason_in_its_scan_while_the_other_target_publishes(
    socket_rig: SocketRig, tmp_path: Path
) -> None:
    """At `interval: 2s` a control socket that accepts and never answers (timeout 3s) outlives the scan's deadline:
    that scan publishes the healthy target and `scan_deadline` for the silent one, whose look goes on and is
    published when its own timeout expires."""
    mute_server = UnixServer(tmp_path / "mute.ctl")  # accepts, never answers
    api = socket_rig.target.model_copy(update={"reload": ReloadConfig()})
    mute = api.model_copy(update={"name": "mute", "control_socket": str(mute_server.path), "timeout": 3.0})
    config = Config(scan=ScanConfig(interval=2, jitter=0), gunicorn=[api, mute])
    store = Store()
    scans = Scans(config=config, store=store, prober=OldLeafProber(socket_rig.old))
    try:
        scans.scan_targets()
        assert mute_server._held  # the silent look was still waiting when the scan published
        states = {t.name: t for t in store.snapshot.targets}
        assert states["api"].master.up
        assert states["mute"].master.error == MasterReason.SCAN_DEADLINE
        assert states["mute"].endpoint.error == EndpointReason.SCAN_DEADLINE
        (_, stats) = next(s for s in store.snapshot.scans if s[0] == "gunicorn")
        assert stats.coverage == 0.5
        rows = {row.name: row for row in status.build(store.snapshot, now=time.time(), thresholds=Thresholds()).targets}
        assert rows["mute"].severity == Severity.UNKNOWN and not rows["mute"].master_up  # not looked at: no finding

        def timed_out() -> bool:
            mute_state = next(t for t in store.snapshot.targets if t.name == "mute")
            return mute_state.master.error == MasterReason.CONTROL_SOCKET_TIMEOUT

        eventually(timed_out, "the silent look's own timeout, published when it expires", timeout=20)
    finally:
        mute_server.close()


def test_a_reload_confirmed_past_the_deadline_shows_the_state_it_was_decided_on(socket_rig: SocketRig) -> None:
    """Not `scan_deadline` (no master, drift unknown): the target was looked at, and its drift is being acted on."""
    release = threading.Event()
    scanner = FileScanner(clock=time.time, max_size=1 << 20)

    # The confirmation waits until the scan has returned: the deadline always comes while it is under way.
    def held(_seconds: float) -> None:
        release.wait(30)

    watcher = TargetWatcher(prober=OldLeafProber(socket_rig.old), scanner=scanner, sleep=held)
    try:
        (state,) = watcher.scan([socket_rig.target], deadline=time.monotonic() + 5)
    finally:
        release.set()
    assert socket_rig.reloads == 1
    assert state.decision == "signal" and state.master.up
    assert [d.mismatch for d in state.drift] == [True]
