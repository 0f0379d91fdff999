"""The rotation runbook against a real Gunicorn 27: access as the workers, the off-peak window, health after HUP.

Gunicorn runs as root with ``--user nobody --group nogroup`` (the renewal outage the issue describes), its files in
a world-searchable directory (pytest's tmp_path is 0700, which would hide everything from nobody). Time is moved
through the watcher's injected clock, never waited for.
"""

from __future__ import annotations

import datetime as dt
import grp
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gunicorn_cert_exporter.config import GunicornTarget, ReloadConfig
from gunicorn_cert_exporter.config_runbook import HealthConfig, WindowConfig
from gunicorn_cert_exporter.metrics.collector import SnapshotCollector
from gunicorn_cert_exporter.model import Snapshot, TargetState
from gunicorn_cert_exporter.sources import gunicorn
from gunicorn_cert_exporter.sources.endpoints import Prober
from gunicorn_cert_exporter.sources.files import FileScanner
from gunicorn_cert_exporter.targets.watcher import TargetWatcher
from tests.support import (
    PKI,
    REPO,
    Gunicorn,
    Issued,
    children,
    eventually,
    gunicorn_python,
    searchable_by,
    unavailable,
)

pytestmark = pytest.mark.integration  # real Gunicorn 27, started as root

# --preload: the master (root) imports the app, since nobody cannot read this Python's standard library (/root).
NOBODY = ("--user", "nobody", "--group", "nogroup", "--preload")
NOGROUP = grp.getgrnam("nogroup").gr_gid if "nogroup" in {g.gr_name for g in grp.getgrall()} else 65534
RELOAD = ReloadConfig(enabled=True, after=10, cooldown=600, max_per_hour=2, verify_timeout=20)


class Recorder:
    """The real signal sender, recording what it sent."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.then: Callable[[gunicorn.MasterIdentity], None] | None = None  # what else happens right after

    def __call__(self, identity: gunicorn.MasterIdentity, signum: int) -> None:
        self.sent.append(signum)
        gunicorn.send_signal(identity, signum)
        if self.then is not None:
            self.then(identity)


class Clock:
    """Real time plus an offset the test moves: 20 s of drift without waiting 20 s."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def __call__(self) -> float:
        return time.time() + self.offset


def install(directory: Path, issued: Issued, *, key_mode: int, key_group: int = 0) -> None:
    """Write key then cert into ``directory``, each renamed into place with its mode set first (as certbot does)."""
    for name, data, mode, group in (
        ("key.pem", issued.key_pem, key_mode, key_group),
        ("cert.pem", issued.cert_pem, 0o644, 0),
    ):
        tmp = directory / f".{name}.tmp"
        tmp.write_bytes(data)
        os.chown(tmp, 0, group)
        tmp.chmod(mode)
        os.replace(tmp, directory / name)


class Rig:
    """One Gunicorn 27 target as root with workers as nobody, its watcher and its metrics."""

    def __init__(
        self,
        base: Path,
        pki: PKI,
        root: Issued,
        *,
        worker_class: str,
        reload: ReloadConfig,
        first: Issued | None = None,
        offset: float = 0.0,
        user: tuple[str, ...] = NOBODY,
        ca_certs: bool = False,
    ) -> None:
        self.pki, self.root = pki, root
        self.live = base / "live"
        self.live.mkdir()
        self.live.chmod(0o755)
        self.first = first or pki.leaf(root)
        install(self.live, self.first, key_mode=0o640, key_group=NOGROUP)
        (base / "ca.pem").write_bytes(root.cert_pem)
        python = gunicorn_python("27.0.1")
        self.server = Gunicorn(
            base,
            worker_class=worker_class,
            cert=self.live / "cert.pem",
            key=self.live / "key.pem",
            python=python,
            args=(*user, "--ca-certs", str(base / "ca.pem")) if ca_certs else user,
            env=_without_setproctitle(base) if ca_certs else None,
        )
        self.target = GunicornTarget(
            name="api",
            cert_file=str(self.live / "cert.pem"),
            key_file=str(self.live / "key.pem"),
            endpoint=self.server.address,
            server_name="localhost",
            ca_file=str(base / "ca.pem"),
            pidfile=str(self.server.pidfile),
            reload=reload,
        )
        self.clock = Clock(offset)
        self.sender = Recorder()
        scanner = FileScanner(clock=self.clock, max_size=1 << 20)
        self.watcher = TargetWatcher(prober=Prober(), scanner=scanner, clock=self.clock, sender=self.sender)

    def scan(self) -> TargetState:
        return self.watcher.scan([self.target])[0]

    def stop(self) -> None:
        self.server.stop()


def _without_setproctitle(base: Path) -> dict[str, str]:
    """Run Gunicorn as ``pip install gunicorn`` does (setproctitle is an extra): its command line stays visible,
    so --ca-certs can be learned. Where setproctitle hides it, the exporter leaves ca_certs out (unknown)."""
    shim = base / "no-setproctitle"
    shim.mkdir()
    (shim / "setproctitle.py").write_text("raise ImportError('not installed for this test')\n")
    return {"PYTHONPATH": f"{shim}:{REPO}"}


def metric(state: TargetState, name: str, **labels: str) -> float | None:
    """Read one sample of a target's series as Prometheus would scrape it."""
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(lambda: Snapshot(targets=(state,))))
    return registry.get_sample_value(name, {"target": state.name, **labels})


def served(state: TargetState) -> set[str]:
    return {a.leaf.fingerprint_sha256 for a in state.endpoint.addresses if a.leaf is not None}


@pytest.fixture
def base() -> Iterator[Path]:
    if os.geteuid() != 0:
        unavailable("Gunicorn must start as root to drop its workers to nobody", ci_must="run the suite as root")
    directory = Path(tempfile.mkdtemp(prefix="runbook-"))
    directory.chmod(0o755)  # nobody must reach the files below; tmp_path is 0700
    with searchable_by(65534, REPO / ".venv-gunicorn"):  # the workers import from the checkout's environments
        yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def rig(base: Path, pki: PKI, root: Issued) -> Iterator[Callable[..., Rig]]:
    started: list[Rig] = []

    def start(**kw: Any) -> Rig:
        sub = base / f"t{len(started)}"
        sub.mkdir()
        sub.chmod(0o755)
        r = Rig(sub, pki, root, **kw)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()


def test_asgi_gets_no_hup_while_its_workers_cant_read_the_renewed_key(rig: Callable[..., Rig]) -> None:
    """A renewed key 0600 root: blocked by worker_cannot_read through 20 s of drift, the old leaf still served;
    chgrp nogroup + chmod 0640: one HUP, the new leaf, worker_can_read 1."""
    r = rig(worker_class="asgi", reload=RELOAD)
    assert metric(r.scan(), "gunicorn_cert_worker_can_read", file="key") == 1
    new = r.pki.leaf(r.root)
    install(r.live, new, key_mode=0o600)
    first = r.scan()
    assert first.decision_rule == "after"  # drift seen, not yet due
    r.clock.offset += 20
    blocked = r.scan()
    assert blocked.decision == "blocked" and blocked.decision_rule == "worker_cannot_read", blocked.decision_reason
    assert metric(blocked, "gunicorn_cert_worker_can_read", file="key") == 0
    assert metric(blocked, "gunicorn_cert_worker_can_read", file="cert") == 1
    assert metric(blocked, "gunicorn_cert_fingerprint_mismatch", address=blocked.drift[0].address) == 1
    assert r.sender.sent == [] and served(blocked) == {r.first.fingerprint}
    assert str(r.live / "key.pem") in blocked.decision_reason
    os.chown(r.live / "key.pem", 0, NOGROUP)
    (r.live / "key.pem").chmod(0o640)
    done = r.scan()
    assert r.sender.sent == [1] and (done.reload_signals, done.reload_failures) == (1, 0)  # one SIGHUP
    assert served(done) == {new.fingerprint}
    assert metric(done, "gunicorn_cert_worker_can_read", file="key") == 1
    assert [p.fingerprint_sha256 for p in done.previous_leaves] == [r.first.fingerprint]


def test_a_directory_the_workers_cant_search_blocks_the_hup_until_opened(rig: Callable[..., Rig]) -> None:
    """The key is 0640 root:nogroup but its directory is 0700 root: still worker_cannot_read, then one HUP."""
    r = rig(worker_class="asgi", reload=RELOAD.model_copy(update={"after": 0.0}))
    new = r.pki.leaf(r.root)
    install(r.live, new, key_mode=0o640, key_group=NOGROUP)
    r.live.chmod(0o700)
    blocked = r.scan()
    assert blocked.decision_rule == "worker_cannot_read" and r.sender.sent == []
    assert metric(blocked, "gunicorn_cert_worker_can_read", file="key") == 0
    assert f"search {r.live}" in blocked.decision_reason and served(blocked) == {r.first.fingerprint}
    r.live.chmod(0o755)
    done = r.scan()
    assert r.sender.sent == [1] and served(done) == {new.fingerprint} and done.reload_failures == 0


def test_sync_workers_that_cant_read_the_key_make_check_critical_naming_it(rig: Callable[..., Rig]) -> None:
    """-k sync reads the key per connection: a key 0644 is exposed (WARNING), a key 0600 root fails now:
    worker_can_read 0 and ``check`` exits 2 naming the file. Gunicorn's --ca-certs is checked as well."""
    r = rig(worker_class="sync", reload=ReloadConfig(), ca_certs=True)
    assert metric(r.scan(), "gunicorn_cert_worker_can_read", file="ca_certs") == 1  # Gunicorn's --ca-certs
    key = r.live / "key.pem"
    key.chmod(0o644)
    exposed = r.scan()
    assert metric(exposed, "gunicorn_cert_key_file_exposed") == 1
    assert metric(exposed, "gunicorn_cert_worker_can_read", file="key") == 1
    os.chown(key, 0, 0)
    key.chmod(0o600)
    denied = r.scan()
    assert metric(denied, "gunicorn_cert_worker_can_read", file="key") == 0
    assert metric(denied, "gunicorn_cert_key_file_exposed") == 0
    config = r.live.parent / "config.yaml"
    config.write_text(
        "gunicorn:\n"
        f"  - {{name: api, cert_file: {r.target.cert_file}, key_file: {key}, endpoint: '{r.target.endpoint}',"
        f" server_name: localhost, ca_file: {r.target.ca_file}, pidfile: {r.target.pidfile}}}\n"
    )
    check = subprocess.run(
        [sys.executable, "-m", "gunicorn_cert_exporter", "check", "--config", str(config), "--problems"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert check.returncode == 2, check.stdout + check.stderr
    assert f"can't read key_file {key}" in check.stdout and "CRITICAL" in check.stdout
    Path(r.target.ca_file or "").chmod(0o600)
    assert metric(r.scan(), "gunicorn_cert_worker_can_read", file="ca_certs") == 0


# 2027-03-25 11:00 UTC, a Thursday: Berlin moves to summer time on Sunday the 28th, before the next window.
WINDOW_NOW = dt.datetime(2027, 3, 25, 11, 0, tzinfo=dt.timezone.utc).timestamp()
MONDAY_0230_CEST = dt.datetime(2027, 3, 29, 0, 30, tzinfo=dt.timezone.utc).timestamp()  # 02:30 at UTC+2


def test_outside_the_window_a_due_reload_waits_unless_the_served_leaf_is_urgent(
    rig: Callable[..., Rig], pki: PKI, root: Issued
) -> None:
    """Drift for 20 s outside reload.window: no HUP, decision window, the next opening across the DST change;
    a target whose served leaf expires within urgent_before gets its HUP anyway."""
    window = WindowConfig(days=["mon"], between="02:30-04:00", timezone="Europe/Berlin")
    reload = RELOAD.model_copy(update={"window": window, "urgent_before": 72 * 3600.0})
    offset = WINDOW_NOW - time.time()
    at = dt.datetime.fromtimestamp(WINDOW_NOW, dt.timezone.utc)

    def lasting() -> Issued:
        return pki.leaf(root, not_before=at - dt.timedelta(days=1), not_after=at + dt.timedelta(days=60))

    calm = rig(worker_class="asgi", reload=reload, offset=offset, first=lasting(), user=())
    short = pki.leaf(root, not_before=at - dt.timedelta(days=1), not_after=at + dt.timedelta(hours=30))
    urgent = rig(worker_class="asgi", reload=reload, offset=offset, first=short, user=())
    for r in (calm, urgent):
        new = lasting()
        install(r.live, new, key_mode=0o640, key_group=NOGROUP)
        assert r.scan().decision_rule == "after"
        r.clock.offset += 20
    waiting = calm.scan()
    assert waiting.decision == "wait" and waiting.decision_rule == "window", waiting.decision_reason
    assert calm.sender.sent == [] and waiting.next_window == MONDAY_0230_CEST
    assert metric(waiting, "gunicorn_cert_reload_next_window_timestamp_seconds") == MONDAY_0230_CEST
    hurried = urgent.scan()
    assert urgent.sender.sent == [1] and hurried.reload_failures == 0 and hurried.decision_rule == "allowed"


@pytest.mark.parametrize(("path", "failures"), [("/status/503", 1), ("/status/200", 0)])
def test_a_reload_is_confirmed_only_when_the_health_path_answers_in_range(
    rig: Callable[..., Rig], path: str, failures: int, caplog: pytest.LogCaptureFixture
) -> None:
    """reload.health on a path that answers 503 counts a failure with reason unhealthy, and the cooldown then
    holds any further reload; one that answers 200 confirms the reload."""
    caplog.set_level(logging.INFO, logger="gunicorn_cert_exporter.reload")
    health = HealthConfig(path=path, expect="200-399")
    reload = RELOAD.model_copy(update={"after": 0.0, "health": health, "verify_timeout": 3.0})
    r = rig(worker_class="asgi", reload=reload, user=())
    new = r.pki.leaf(r.root)
    install(r.live, new, key_mode=0o640, key_group=NOGROUP)
    done = r.scan()
    assert r.sender.sent == [1] and served(done) == {new.fingerprint}
    assert done.reload_failures == failures
    assert metric(done, "gunicorn_cert_reload_failures_by_reason_total", reason="unhealthy") == failures
    assert metric(done, "gunicorn_cert_reload_failures_by_reason_total", reason="not_served") == 0
    lines = [rec for rec in caplog.records if rec.getMessage() == "reload"]
    assert len(lines) == 1  # one audit line, with the status seen
    assert getattr(lines[0], "outcome", "") == ("not_confirmed" if failures else "confirmed")
    assert f"GET {path}: {path[-3:]} (expect 200-399)" in getattr(lines[0], "reason", "")
    if failures:
        install(r.live, r.pki.leaf(r.root), key_mode=0o640, key_group=NOGROUP)  # drift again at once
        again = r.scan()
        assert again.decision_rule == "cooldown" and r.sender.sent == [1]
    else:
        assert done.previous_leaves[-1].fingerprint_sha256 == r.first.fingerprint


def test_a_reload_that_leaves_fewer_workers_counts_workers_missing(rig: Callable[..., Rig]) -> None:
    """The new leaf is served, but the master runs one worker fewer than before (TTOU after the HUP):
    not confirmed, reason workers_missing."""
    r = rig(worker_class="asgi", reload=RELOAD.model_copy(update={"after": 0.0, "verify_timeout": 3.0}), user=())
    before = set(children(r.server.process.pid))

    def one_worker_fewer(identity: gunicorn.MasterIdentity) -> None:
        """Once the HUP has replaced the workers, TTOU: the master keeps one worker fewer than before."""
        eventually(lambda: not before & set(children(identity.pid)), "the HUP to replace the workers")
        gunicorn.send_signal(identity, signal.SIGTTOU)
        eventually(lambda: len(children(identity.pid)) == 1, "TTOU to stop one worker")

    r.sender.then = one_worker_fewer
    new = r.pki.leaf(r.root)
    install(r.live, new, key_mode=0o640, key_group=NOGROUP)
    done = r.scan()
    assert r.sender.sent == [signal.SIGHUP] and served(done) == {new.fingerprint}
    assert len(done.master.workers) == 1 and done.reload_failures == 1
    assert metric(done, "gunicorn_cert_reload_failures_by_reason_total", reason="workers_missing") == 1
