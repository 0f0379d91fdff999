"""The rotation runbook against a real Gunicorn 27: access as the workers, the off-peak window, health after HUP.

Gunicorn runs as root with ``--user nobody --group nogroup`` (the renewal outage the issue describes), its files in
a world-searchable directory (pytest's tmp_path is 0700, which would hide everything from nobody). Time is moved
through the watcher's injected clock, never waited for.
"""

from __future__ import annotations

import datetime as dt
import grp
import os
import shutil
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
from tests.support import PKI, Gunicorn, Issued, gunicorn_python, unavailable

# --preload: the master (root) imports the app, since nobody cannot read this Python's standard library (/root).
NOBODY = ("--user", "nobody", "--group", "nogroup", "--preload")
NOGROUP = grp.getgrnam("nogroup").gr_gid if "nogroup" in {g.gr_name for g in grp.getgrall()} else 65534
RELOAD = ReloadConfig(enabled=True, after=10, cooldown=600, max_per_hour=2, verify_timeout=20)


class Recorder:
    """The real signal sender, recording what it sent."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    def __call__(self, identity: gunicorn.MasterIdentity, signum: int) -> None:
        self.sent.append(signum)
        gunicorn.send_signal(identity, signum)


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
            args=user,
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
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def rig(base: Path, pki: PKI, root: Issued) -> Iterator[Callable[..., Rig]]:
    started: list[Rig] = []

    def start(**kw: Any) -> Rig:  # noqa: ANN401  (Rig's keywords)
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
