"""Reload safety with real Gunicorn 27 (-k asgi) on loopback: only the master that serves the target is signalled."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from cryptography.hazmat.primitives import serialization

from gunicorn_cert_exporter.config import Config, GunicornTarget
from gunicorn_cert_exporter.model import MasterReason, MasterState, TargetState
from gunicorn_cert_exporter.scanning.scans import Scans
from gunicorn_cert_exporter.scanning.store import Store
from gunicorn_cert_exporter.sources import gunicorn
from gunicorn_cert_exporter.sources.endpoints import Prober
from gunicorn_cert_exporter.sources.files import FileScanner
from gunicorn_cert_exporter.sources.listeners import Binding
from gunicorn_cert_exporter.targets.watcher import TargetWatcher
from tests.support import PKI, FakeGunicorn, Gunicorn, Issued, TLSServer, eventually, server_context, write_chain
from tests.support.gunicorn import after_start_of
from tests.support.waiting import wait_until
from tests.test_gunicorn import no_setproctitle
from tests.test_watcher import RELOAD, Recorder, rotate


class Rig:
    """One target watched with the real signal sender (recording), its files in ``directory``."""

    def __init__(self, directory: Path, pki: PKI, root: Issued) -> None:
        self.directory, self.pki, self.root = directory, pki, root
        self.first = pki.leaf(root)
        rotate(directory, self.first)
        (directory / "ca.pem").write_bytes(root.cert_pem)
        self.sender = Recorder()
        self.watcher = TargetWatcher(
            prober=Prober(), scanner=FileScanner(clock=time.time, max_size=1 << 20), sender=self.sender
        )
        self.target: GunicornTarget | None = None

    def watch(self, *, endpoint: str, pidfile: Path) -> None:
        self.target = GunicornTarget(
            name="a",
            cert_file=str(self.directory / "cert.pem"),
            key_file=str(self.directory / "key.pem"),
            endpoint=endpoint,
            server_name="localhost",
            ca_file=str(self.directory / "ca.pem"),
            pidfile=str(pidfile),
            reload=RELOAD,
        )

    def scan(self) -> TargetState:
        assert self.target is not None
        return self.watcher.scan([self.target])[0]

    def scan_until(self, done: Callable[[TargetState], bool], what: str) -> TargetState:
        """Scan until a state satisfies ``done``; fail after a generous timeout."""

        def attempt() -> TargetState | None:
            state = self.scan()
            return state if done(state) else None

        return eventually(attempt, what, timeout=60)

    def served(self) -> str:
        assert self.target is not None
        leaf = Prober().probe(self.target.as_endpoint()).addresses[0].leaf
        assert leaf is not None
        return leaf.fingerprint_sha256

    def rotate_later(self) -> Issued:
        """Rotate after the workers started (as a renewal does), to a new valid pair."""
        assert self.target is not None and self.target.pidfile is not None
        after_start_of(int(Path(self.target.pidfile).read_text()))
        new = self.pki.leaf(self.root)
        rotate(self.directory, new)
        return new


@pytest.fixture
def rig(tmp_path: Path, pki: PKI, root: Issued) -> Rig:
    return Rig(tmp_path, pki, root)


@pytest.fixture
def servers() -> Iterator[list[Gunicorn]]:
    started: list[Gunicorn] = []
    yield started
    for server in started:
        server.stop()


def _worker_pids(pid: int) -> set[int]:
    return {c.pid for c in psutil.Process(pid).children()}


@pytest.mark.integration
def test_a_pidfile_that_names_another_master_gets_no_signal(
    rig: Rig, servers: list[Gunicorn], tmp_path: Path, pki: PKI, root: Issued
) -> None:
    """A's pidfile is a symlink to master B's (B serves another port): B is never signalled, A says why."""
    a = Gunicorn(tmp_path, worker_class="asgi", cert=tmp_path / "cert.pem", key=tmp_path / "key.pem")
    other = tmp_path / "b"
    other.mkdir()
    cert_b, key_b = write_chain(other, "b", pki.leaf(root))
    b = Gunicorn(other, worker_class="asgi", cert=cert_b, key=key_b)
    servers += [a, b]
    (tmp_path / "a-link.pid").symlink_to(b.pidfile)
    rig.watch(endpoint=a.address, pidfile=tmp_path / "a-link.pid")
    b_workers = _worker_pids(b.process.pid)
    rig.scan()
    rig.rotate_later()
    for _ in range(3):
        state = rig.scan()
        assert [d.mismatch for d in state.drift] == [True]
        assert state.master.error is MasterReason.NOT_LISTENING
        assert f"port {a.port}" in state.master.detail
    assert rig.sender.sent == []
    assert _worker_pids(b.process.pid) == b_workers  # a HUP would have replaced B's workers


@pytest.mark.integration
@pytest.mark.parametrize("form", ["script", "module"])
def test_a_process_that_only_looks_like_gunicorn_is_never_signalled(rig: Rig, tmp_path: Path, form: str) -> None:
    """A Python TLS server run as a script named ``gunicorn`` (with a forked "worker"), or as ``-m gunicorn``
    from a look-alike module, serves the target's port: it is never signalled (it has no HUP handler)."""
    fake = FakeGunicorn(tmp_path, cert=tmp_path / "cert.pem", key=tmp_path / "key.pem", form=form)
    try:
        rig.watch(endpoint=fake.address, pidfile=fake.pidfile)
        rig.scan()
        rig.rotate_later()
        for _ in range(2):
            state = rig.scan()
            assert [d.mismatch for d in state.drift] == [True]
            assert not state.master.up
        assert rig.sender.sent == []
        assert fake.alive()
    finally:
        fake.stop()


@pytest.mark.integration
def test_an_encrypted_key_with_drift_gets_no_hup(rig: Rig, servers: list[Gunicorn], tmp_path: Path) -> None:
    """A key_file whose passphrase the exporter doesn't have: the pairing is unknown, so Gunicorn is not HUPed
    (its workers could not load the key)."""
    servers.append(Gunicorn(tmp_path, worker_class="asgi", cert=tmp_path / "cert.pem", key=tmp_path / "key.pem"))
    rig.watch(endpoint=servers[0].address, pidfile=servers[0].pidfile)
    assert rig.scan().master.up
    new = rig.rotate_later()
    encrypted = new.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"not-given-to-the-exporter"),
    )
    (tmp_path / "key.pem").write_bytes(encrypted)
    for _ in range(3):
        state = rig.scan()
        assert state.master.up and [d.mismatch for d in state.drift] == [True]
        assert state.key_match is not True
    assert rig.sender.sent == []
    assert rig.served() == rig.first.fingerprint and servers[0].process.poll() is None


@pytest.mark.integration
@pytest.mark.parametrize("titles", ["plain", "setproctitle"])
def test_usr2_successor_is_never_a_worker_and_the_target_follows_it(
    rig: Rig, servers: list[Gunicorn], tmp_path: Path, titles: str
) -> None:
    """The new master (a child of the old: the same command line without setproctitle, `gunicorn: master` with it)
    is not counted as a worker and no reload happens during the overlap; after TERM to the old master the target
    follows the new one, and a later rotation gets one HUP and the new leaf is served."""
    old = Gunicorn(
        tmp_path,
        worker_class="asgi",
        cert=tmp_path / "cert.pem",
        key=tmp_path / "key.pem",
        env=no_setproctitle(tmp_path) if titles == "plain" else None,
        console_script=True,  # `python -m gunicorn` re-execs with gunicorn/ first on sys.path: asgi can't import
    )
    servers.append(old)
    rig.watch(endpoint=old.address, pidfile=old.pidfile)
    assert len(rig.scan().master.workers) == 2
    os.kill(old.process.pid, signal.SIGUSR2)
    successor_file = Path(f"{old.pidfile}.2")
    new_pid = int(eventually(lambda: successor_file.read_text().strip(), "the new master's pidfile", timeout=30))
    try:
        eventually(lambda: len(_worker_pids(new_pid)) == 2, "the new master's workers", timeout=30)
        for _ in range(3):
            state = rig.scan()
            assert state.master.up and state.master.pid == old.process.pid
            assert len(state.master.workers) == 2 and new_pid not in {w.pid for w in state.master.workers}
            assert state.master.successor == new_pid
        old.process.terminate()
        old.process.wait(timeout=30)
        eventually(lambda: old.pidfile.read_text().strip() == str(new_pid), "the new master on the pidfile")
        followed = rig.scan_until(lambda s: s.master.up, "the target to follow the new master")
        assert followed.master.pid == new_pid and len(followed.master.workers) == 2
        new = rig.rotate_later()
        state = rig.scan_until(lambda s: s.reload_signals > 0, "one reload")
        assert rig.sender.sent == [(new_pid, signal.SIGHUP)]
        assert (state.reload_signals, state.reload_failures) == (1, 0)
        assert rig.served() == new.fingerprint
    finally:
        _stop(new_pid)


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.integration
def test_python_dash_m_gunicorn_stays_up_across_usr2(tmp_path: Path, pki: PKI, root: Issued) -> None:
    """``python -m gunicorn`` re-execs as ``python .../gunicorn/__main__.py``: that master is Gunicorn too."""
    cert, key = write_chain(tmp_path, "tls", pki.leaf(root))
    old = Gunicorn(tmp_path, worker_class="sync", cert=cert, key=key, env=no_setproctitle(tmp_path))
    new_pid = 0
    try:
        os.kill(old.process.pid, signal.SIGUSR2)
        new_pid = int(eventually(lambda: Path(f"{old.pidfile}.2").read_text().strip(), "the new master", timeout=30))
        eventually(lambda: len(_worker_pids(new_pid)) == 2, "the new master's workers", timeout=30)
        old.process.terminate()
        old.process.wait(timeout=30)
        eventually(lambda: old.pidfile.read_text().strip() == str(new_pid), "the new master on the pidfile")
        assert psutil.Process(new_pid).cmdline()[1].endswith("gunicorn/__main__.py")
        binding = Binding(port=old.port, host=ipaddress.ip_address("127.0.0.1"))

        def proven() -> MasterState | None:
            state = gunicorn.locate(pidfile=str(old.pidfile), pid=None, binding=binding)
            return state if state.up else None

        state = eventually(proven, "the re-executed master to be proven", timeout=30)
        assert state.pid == new_pid and len(state.workers) == 2
    finally:
        old.stop()
        if new_pid:
            _stop(new_pid)


def _stop(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    eventually(lambda: not psutil.pid_exists(pid) or _zombie(pid), f"{pid} to exit", timeout=30)


@pytest.mark.integration
def test_a_future_mtime_never_counts_as_changed_after_the_workers_started(
    rig: Rig, servers: list[Gunicorn], tmp_path: Path, pki: PKI, root: Issued
) -> None:
    """cert_file's mtime is an hour ahead and the drift is one a HUP can't cure (Gunicorn serves another file):
    after one HUP the workers are newer than the file, so no second HUP even with no cooldown."""
    served = tmp_path / "served"
    served.mkdir()
    cert, key = write_chain(served, "tls", pki.leaf(root))
    servers.append(Gunicorn(served, worker_class="asgi", cert=cert, key=key))
    future = time.time() + 3600
    os.utime(tmp_path / "cert.pem", (future, future))
    rig.watch(endpoint=servers[0].address, pidfile=servers[0].pidfile)
    assert rig.target is not None
    rig.target = rig.target.model_copy(
        update={
            "reload": RELOAD.model_copy(update={"after": 2.5, "cooldown": 0, "max_per_hour": 60, "verify_timeout": 2})
        }
    )
    # First sight of the file, then 2.5s of drift: the new workers are clearly newer than that first sight
    # (process start times are only good to about a second).
    seen = rig.scan()
    assert seen.reload_signals == 0 and seen.drift[0].since is not None
    wait_until(seen.drift[0].since + 2.6, "2.5 s of drift")  # reload.after, on the watcher's clock (time.time)
    first = rig.scan()
    assert first.reload_signals == 1 and [d.mismatch for d in first.drift] == [True]
    for _ in range(3):
        assert rig.scan().reload_signals == 1
    assert len(rig.sender.sent) == 1


def test_a_blocked_decision_is_logged_when_its_reason_changes_not_every_scan(
    tmp_path: Path, pki: PKI, root: Issued, tls_server: type[TLSServer], caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(tmp_path, pki, root)
    server = tls_server("127.0.0.1", context=server_context((pki.leaf(root),)))  # serves another leaf: drift
    rig.watch(endpoint=server.address, pidfile=tmp_path / "missing.pid")
    with caplog.at_level("DEBUG", logger="gunicorn_cert_exporter.reload"):
        for _ in range(4):
            assert rig.scan().master.error is MasterReason.PIDFILE_MISSING
        (tmp_path / "missing.pid").write_text("999999999\n")  # now a pid that names no process
        for _ in range(3):
            assert rig.scan().master.error is MasterReason.NO_PROCESS
    info = [r for r in caplog.records if r.levelname == "INFO" and r.getMessage() == "reload decision"]
    assert [getattr(r, "outcome", "") for r in info] == ["blocked", "blocked"]
    assert "pidfile_missing" in getattr(info[0], "reason", "") and "no_process" in getattr(info[1], "reason", "")
    assert rig.sender.sent == []


@pytest.mark.integration
def test_a_target_being_reloaded_never_holds_back_another_targets_results(
    rig: Rig, servers: list[Gunicorn], tmp_path: Path
) -> None:
    """While one target's reload is being confirmed, the other target's fresh state is already published."""
    servers.append(Gunicorn(tmp_path, worker_class="asgi", cert=tmp_path / "cert.pem", key=tmp_path / "key.pem"))
    rig.watch(endpoint=servers[0].address, pidfile=servers[0].pidfile)
    assert rig.target is not None
    slow = rig.target
    quick = slow.model_copy(update={"name": "quick", "reload": RELOAD.model_copy(update={"enabled": False})})
    store = Store()
    seen_while_reloading: list[bool] = []

    def sender(identity: gunicorn.MasterIdentity, signum: int) -> None:
        def published() -> bool:
            return any(t.name == "quick" and t.drift for t in store.snapshot.targets)

        try:
            seen_while_reloading.append(eventually(published, "the other target's state", timeout=20))
        except AssertionError:
            seen_while_reloading.append(False)
        gunicorn.send_signal(identity, signum)

    scans = Scans(config=Config(gunicorn=[slow, quick]), store=store, prober=Prober(), sender=sender)
    rig.rotate_later()
    scans.scan_targets()
    assert seen_while_reloading == [True]
    assert {t.name: t.reload_signals for t in store.snapshot.targets} == {"a": 1, "quick": 0}


@pytest.mark.integration
def test_check_observes_drift_and_never_signals(rig: Rig, servers: list[Gunicorn], tmp_path: Path) -> None:
    """`check` runs from cron and monitoring agents: with reload enabled and every rule met, it still sends nothing."""
    server = Gunicorn(tmp_path, worker_class="asgi", cert=tmp_path / "cert.pem", key=tmp_path / "key.pem")
    servers.append(server)
    rig.watch(endpoint=server.address, pidfile=server.pidfile)
    workers = _worker_pids(server.process.pid)
    rig.rotate_later()
    config = tmp_path / "check.yaml"
    config.write_text(
        f"gunicorn: [{{name: a, cert_file: {tmp_path}/cert.pem, key_file: {tmp_path}/key.pem, "
        f"endpoint: '{server.address}', server_name: localhost, ca_file: {tmp_path}/ca.pem, "
        f"pidfile: {server.pidfile}, reload: {{enabled: true, after: 0s, cooldown: 0s, max_per_hour: 60}}}}]\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn_cert_exporter", "check", "--config", str(config), "--output", "prometheus"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert 'gunicorn_cert_fingerprint_mismatch{address="127.0.0.1",target="a"} 1.0' in result.stdout
    assert "gunicorn_cert_reload_signals_total" in result.stdout and 'signals_total{target="a"} 0.0' in result.stdout
    server.barrier()  # every signal sent before this one has been handled: a HUP from `check` would show now
    assert "hup" not in server.signals_handled()
    assert workers <= _worker_pids(server.process.pid)  # a HUP would have replaced every worker (TTIN added one)
