"""Gunicorn's control socket: bounded exchanges, proof by listeners, and a reload from another PID namespace."""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gunicorn_cert_exporter.config import GunicornTarget
from gunicorn_cert_exporter.model import MasterReason
from gunicorn_cert_exporter.sources import control_socket
from gunicorn_cert_exporter.sources.control_socket import ControlError
from gunicorn_cert_exporter.sources.endpoints import Prober
from gunicorn_cert_exporter.sources.files import FileScanner
from gunicorn_cert_exporter.targets.watcher import TargetWatcher
from tests.support import (
    PKI,
    ExporterProcess,
    Gunicorn,
    Issued,
    UnixServer,
    eventually,
    free_port,
    require_tool,
    unavailable,
    write_chain,
)
from tests.support.gunicorn import after_start_of
from tests.test_watcher import rotate


def _reason(path: Path, timeout: float = 1.0) -> MasterReason:
    with pytest.raises(ControlError) as caught:
        control_socket.exchange(str(path), "show stats", timeout=timeout)
    return caught.value.reason


def test_a_plain_file_is_refused_unopened(tmp_path: Path) -> None:
    (tmp_path / "ctl").write_text("not a socket")
    reads: list[float] = []

    def clock() -> float:  # each read is a second later: a retry loop would end at the deadline, not hang
        reads.append(float(len(reads)))
        return reads[-1]

    with pytest.raises(ControlError) as caught:
        control_socket.exchange(str(tmp_path / "ctl"), "show stats", timeout=5, clock=clock)
    assert caught.value.reason is MasterReason.CONTROL_SOCKET_INVALID
    assert reads == [0.0]  # the deadline was set, then the file refused: no connect, no retry until the deadline


def test_a_socket_that_never_answers_costs_its_timeout_only(tmp_path: Path) -> None:
    server = UnixServer(tmp_path / "ctl")
    try:
        assert _reason(tmp_path / "ctl", timeout=1.0) is MasterReason.CONTROL_SOCKET_TIMEOUT
        assert server.held == 1  # asked once and gave up at the deadline: no second attempt
    finally:
        server.close()


def test_an_oversized_reply_is_refused(tmp_path: Path) -> None:
    server = UnixServer(tmp_path / "ctl", reply=struct.pack(">I", 1 << 30) + b"{")
    try:
        assert _reason(tmp_path / "ctl") is MasterReason.CONTROL_SOCKET_ERROR
    finally:
        server.close()


def test_a_socket_that_appears_within_the_deadline_is_used(tmp_path: Path) -> None:
    """Gunicorn unlinks and re-creates its socket around forks: ENOENT is retried until the deadline."""
    body = json.dumps({"id": 1, "status": "ok", "data": {"pid": 7}}).encode()
    servers: list[UnixServer] = []
    later = threading.Timer(
        0.3, lambda: servers.append(UnixServer(tmp_path / "ctl", reply=struct.pack(">I", len(body)) + body))
    )
    later.start()
    try:
        assert control_socket.exchange(str(tmp_path / "ctl"), "show stats", timeout=5) == {"pid": 7}
        assert _reason(tmp_path / "missing", timeout=0.5) is MasterReason.CONTROL_SOCKET_UNAVAILABLE
    finally:
        later.join()
        for server in servers:
            server.close()


@pytest.fixture
def with_socket(tmp_path: Path, pki: PKI, root: Issued) -> Iterator[Gunicorn]:
    """Gunicorn 27 -k asgi with a control socket and no pidfile."""
    first = pki.leaf(root)
    rotate(tmp_path, first)
    (tmp_path / "ca.pem").write_bytes(root.cert_pem)
    server = Gunicorn(
        tmp_path,
        worker_class="asgi",
        cert=tmp_path / "cert.pem",
        key=tmp_path / "key.pem",
        pidfile=False,
        args=("--control-socket", str(tmp_path / "gunicorn.ctl")),
    )
    yield server
    server.stop()


def _target(directory: Path, name: str, *, socket_path: Path, endpoint: str) -> GunicornTarget:
    return GunicornTarget(
        name=name,
        cert_file=str(directory / "cert.pem"),
        key_file=str(directory / "key.pem"),
        endpoint=endpoint,
        control_socket=str(socket_path),
        timeout=1.0,
    )


@pytest.mark.integration
def test_broken_sockets_have_a_reason_and_stall_no_other_target(tmp_path: Path, with_socket: Gunicorn) -> None:
    (tmp_path / "plain").write_text("")
    silent = UnixServer(tmp_path / "silent.ctl")
    good = tmp_path / "gunicorn.ctl"
    targets = [
        _target(tmp_path, "plain", socket_path=tmp_path / "plain", endpoint=with_socket.address),
        _target(tmp_path, "silent", socket_path=tmp_path / "silent.ctl", endpoint=with_socket.address),
        _target(tmp_path, "elsewhere", socket_path=good, endpoint=f"127.0.0.1:{free_port()}"),
        _target(tmp_path, "good", socket_path=good, endpoint=with_socket.address),
    ]
    watcher = TargetWatcher(prober=Prober(), scanner=FileScanner(clock=time.time, max_size=1 << 20))
    try:
        states = {s.name: s.master for s in watcher.scan(targets)}
    finally:
        silent.close()
    assert states["plain"].error is MasterReason.CONTROL_SOCKET_INVALID
    assert states["silent"].error is MasterReason.CONTROL_SOCKET_TIMEOUT
    assert states["elsewhere"].error is MasterReason.NOT_LISTENING  # the socket's master serves another port
    good_master = states["good"]
    assert good_master.up and good_master.channel == "control_socket"
    assert good_master.pid == with_socket.process.pid and len(good_master.workers) == 2
    assert silent.held == 1  # the silent socket cost its own timeout once; the others got their own answers


@pytest.mark.integration
def test_from_its_own_pid_namespace_the_exporter_reloads_through_the_socket(
    tmp_path: Path, pki: PKI, root: Issued, with_socket: Gunicorn
) -> None:
    """The exporter can't see Gunicorn's pid (unshare --pid --mount-proc): master_up 1, workers 2; a rotation
    gives drift, exactly one reload, the new leaf served, drift 0, and last_reload moves."""
    unshare = require_tool("unshare")
    if os.geteuid() != 0:  # CI runs as root: there this never skips
        unavailable("a PID namespace needs root", ci_must="CI runs as root")
    config = tmp_path / "config.yaml"
    config.write_text(
        "scan: {interval: 1s, jitter: 0%}\ngunicorn:\n"
        f"  - name: api\n    cert_file: cert.pem\n    key_file: key.pem\n    endpoint: {with_socket.address}\n"
        "    server_name: localhost\n    ca_file: ca.pem\n    control_socket: gunicorn.ctl\n"
        "    reload: {enabled: true, after: 0s, cooldown: 15m, max_per_hour: 2, verify_timeout: 20s}\n"
    )
    prefix = (unshare, "--pid", "--fork", "--kill-child", "--mount-proc")
    exporter = ExporterProcess(config, cwd=tmp_path, storage=tmp_path, prefix=prefix)
    try:
        info = 'gunicorn_cert_master_info{channel="control_socket",target="api"}'
        before = eventually(
            lambda: m if (m := exporter.metrics()).get(info) == 1.0 else None, "the master proven via socket"
        )
        assert before['gunicorn_cert_master_pid{target="api"}'] == with_socket.process.pid
        assert before['gunicorn_cert_master_up{target="api"}'] == 1.0
        assert before['gunicorn_cert_master_workers{target="api"}'] == 2.0
        last_reload = before['gunicorn_cert_last_reload_timestamp_seconds{target="api"}']
        after_start_of(with_socket.process.pid)  # the renewal comes after the workers started
        new = pki.leaf(root)
        rotate(tmp_path, new)
        done = 'gunicorn_cert_reload_signals_total{target="api"}'
        after = eventually(lambda: m if (m := exporter.metrics()).get(done) == 1.0 else None, "one reload", timeout=90)
        eventually(
            lambda: (
                exporter.metrics().get('gunicorn_cert_fingerprint_mismatch{address="127.0.0.1",target="api"}') == 0.0
            ),
            "drift to clear",
        )
        later = exporter.metrics()
        assert later['gunicorn_cert_last_reload_timestamp_seconds{target="api"}'] > last_reload
        assert later[done] == 1.0 and after['gunicorn_cert_reload_failures_total{target="api"}'] == 0.0
        stats = control_socket.exchange(str(tmp_path / "gunicorn.ctl"), "show stats", timeout=5)
        assert stats["reloads"] == 1  # exactly one reload, and Gunicorn counted it
        leaf = Prober().probe(_target(tmp_path, "x", socket_path=tmp_path, endpoint=with_socket.address).as_endpoint())
        served = leaf.addresses[0].leaf
        assert served is not None and served.fingerprint_sha256 == new.fingerprint
    finally:
        exporter.stop()


@pytest.mark.integration
def test_the_pid_is_cross_checked_where_it_is_visible(
    tmp_path: Path, pki: PKI, root: Issued, with_socket: Gunicorn
) -> None:
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    cert, key = write_chain(other_dir, "tls", pki.leaf(root))
    other = Gunicorn(other_dir, worker_class="sync", cert=cert, key=key)
    try:
        good = _target(tmp_path, "api", socket_path=tmp_path / "gunicorn.ctl", endpoint=with_socket.address)
        watcher = TargetWatcher(prober=Prober(), scanner=FileScanner(clock=time.time, max_size=1 << 20))
        agreeing = good.model_copy(update={"pid": with_socket.process.pid})
        assert watcher.scan([agreeing])[0].master.up
        disagreeing = good.model_copy(update={"pidfile": str(other.pidfile)})
        master = watcher.scan([disagreeing])[0].master
        assert master.error is MasterReason.PID_MISMATCH and str(other.process.pid) in master.detail
    finally:
        other.stop()


@pytest.mark.integration
def test_last_reload_moves_when_the_master_reloads_whoever_asked(tmp_path: Path, with_socket: Gunicorn) -> None:
    target = _target(tmp_path, "api", socket_path=tmp_path / "gunicorn.ctl", endpoint=with_socket.address)
    watcher = TargetWatcher(prober=Prober(), scanner=FileScanner(clock=time.time, max_size=1 << 20))
    before = watcher.scan([target])[0]
    assert before.master.up and before.last_reload is not None
    old_workers = {w.pid for w in before.master.workers}
    after_start_of(with_socket.process.pid)  # the new workers' start times must be distinguishably later
    control_socket.reload(str(tmp_path / "gunicorn.ctl"), timeout=5)  # someone else (gunicornc) reloads

    def replaced() -> bool:
        view = control_socket.observe(str(tmp_path / "gunicorn.ctl"), timeout=5)
        return len(view.workers) == 2 and not old_workers & set(view.workers)

    eventually(replaced, "the workers to be replaced", timeout=30)
    after = watcher.scan([target])[0]
    assert after.master.up and after.master.reloads == 1
    assert after.last_reload is not None and after.last_reload > before.last_reload
    assert after.reload_signals == 0  # seen, not caused


def test_the_same_pid_with_another_start_time_is_another_master() -> None:
    """A restarted master in a container is pid 1 again; only its start time (now - uptime) tells it apart."""
    view = control_socket.ControlView(pid=1, uptime=5.0, reloads=0, workers=(), ports=(8443,))
    assert control_socket.same_master(view, pid=1, start_time=995.4, now=1000.0)  # uptime is rounded
    assert not control_socket.same_master(view, pid=1, start_time=100.0, now=1000.0)
    assert not control_socket.same_master(view, pid=2, start_time=995.0, now=1000.0)
