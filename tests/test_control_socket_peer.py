"""sources/control_socket.py: nothing is sent to a control socket until the kernel proves who listens on it.

The fake control socket (tests.support.ControlServer) runs in this process, so SO_PEERCRED names this process:
a reply naming any other pid is another process speaking in a master's name.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gunicorn_cert_exporter.config import EndpointConfig, GunicornTarget, ReloadConfig
from gunicorn_cert_exporter.model import AddressResult, EndpointResult
from gunicorn_cert_exporter.reasons import MasterReason
from gunicorn_cert_exporter.sources import certs, control_socket
from gunicorn_cert_exporter.sources.control_socket import ControlError, Peer, check_peer
from gunicorn_cert_exporter.sources.endpoints import Prober
from gunicorn_cert_exporter.sources.files import FileScanner
from gunicorn_cert_exporter.targets.watcher import TargetWatcher
from tests.support import PKI, ControlServer, Issued

EAGER = ReloadConfig(enabled=True, after=0, cooldown=0, max_per_hour=60, verify_timeout=1)


class OldLeaf(Prober):
    """The endpoint serves ``leaf`` (the files hold a newer one): a drift that every rule lets a reload fix."""

    def __init__(self, leaf: Issued) -> None:
        super().__init__()
        self.leaf = certs.cert_facts(leaf.cert)

    def probe(self, config: EndpointConfig) -> EndpointResult:
        served = AddressResult(address="127.0.0.1", chain=(self.leaf,))
        return EndpointResult(endpoint=config.address, server_name=config.sni or "", addresses=(served,))


class Rig:
    def __init__(self, directory: Path, pki: PKI, root: Issued) -> None:
        new = pki.leaf(root)
        (directory / "cert.pem").write_bytes(new.cert_pem)
        (directory / "key.pem").write_bytes(new.key_pem)
        self.path = directory / "ctl"
        self.servers: list[ControlServer] = []
        self.target = GunicornTarget(
            name="api",
            cert_file=str(directory / "cert.pem"),
            key_file=str(directory / "key.pem"),
            endpoint="127.0.0.1:8443",
            control_socket=str(self.path),
            timeout=1.0,
            reload=EAGER,
        )
        self.watcher = TargetWatcher(
            prober=OldLeaf(pki.leaf(root)), scanner=FileScanner(clock=time.time, max_size=1 << 20)
        )

    def serve(self, *, pid: int) -> ControlServer:
        server = ControlServer(self.path, pid=pid, port=8443, started=time.time() - 3600)
        self.servers.append(server)
        return server


@pytest.fixture
def rig(tmp_path: Path, pki: PKI, root: Issued) -> Iterator[Rig]:
    made = Rig(tmp_path, pki, root)
    yield made
    for server in made.servers:
        server.close()


def test_the_proven_master_is_reloaded_through_its_socket(rig: Rig) -> None:
    """The control: this process listens and says so; the drift is fixed by one reload through the socket."""
    server = rig.serve(pid=os.getpid())
    state = rig.watcher.scan([rig.target])[0]
    assert state.master.up and server.commands.count("reload") == 1


@pytest.mark.parametrize(
    ("claimed", "reason"),
    [
        (1, MasterReason.PID_MISMATCH),
        (-1, MasterReason.CONTROL_SOCKET_ERROR),  # no pid at all: refused where the reply is read, before the peer
        (4_194_304, MasterReason.PID_MISMATCH),
    ],
    ids=["init's pid", "-1", "a pid no process has"],
)
def test_a_reply_naming_another_master_is_pid_mismatch_and_nothing_is_sent(
    rig: Rig, claimed: int, reason: MasterReason, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 25 item 3: a socket could claim any master; the audit line then said "reload sent through the control
    socket to <that pid>". Now the kernel's word decides: pid_mismatch, no reload, no such line."""
    server = rig.serve(pid=claimed)
    with caplog.at_level(logging.DEBUG):
        state = rig.watcher.scan([rig.target])[0]
    assert state.master.error is reason
    assert reason is not MasterReason.PID_MISMATCH or str(os.getpid()) in state.master.detail
    assert state.decision == "blocked"
    assert "reload" not in server.commands and server.commands == ["show stats"]  # not even the other questions
    assert not [r for r in caplog.records if "reload sent" in str(vars(r).get("reason", ""))]


def test_a_reload_goes_only_to_a_connection_whose_listener_is_the_master(rig: Rig) -> None:
    """Between the last look and the reload the listener could change: the reload's own connection is checked."""
    server = rig.serve(pid=os.getpid())
    with pytest.raises(ControlError) as refused:
        control_socket.reload(str(rig.path), timeout=1.0, pid=os.getpid() + 1_000_000)
    assert refused.value.reason is MasterReason.PID_MISMATCH and server.commands == []


@pytest.mark.parametrize("via_symlink", [False, True], ids=["the socket", "a symlink to it"])
def test_a_socket_file_owned_by_another_uid_is_untrusted_and_nothing_is_sent(
    rig: Rig, tmp_path: Path, via_symlink: bool
) -> None:
    """Issue 25 item 3: run as root, the exporter followed a symlink to another user's socket and trusted it. The
    socket file's owner must be the uid its listener runs as (here: owned by nobody, listened on by root)."""
    if os.geteuid() != 0:
        pytest.fail("this test chowns a socket to nobody: CI runs as root")
    server = rig.serve(pid=os.getpid())
    os.chown(rig.path, 65534, 65534)
    target = rig.target
    if via_symlink:
        (tmp_path / "link.ctl").symlink_to(rig.path)
        target = target.model_copy(update={"control_socket": str(tmp_path / "link.ctl")})
    state = rig.watcher.scan([target])[0]
    assert state.master.error is MasterReason.CONTROL_SOCKET_UNTRUSTED and "uid 65534" in state.master.detail
    assert server.commands == []  # refused on connecting: not one command sent


def test_without_a_visible_pid_the_owner_and_mode_are_the_proof() -> None:
    """In a sidecar without a shared PID namespace the kernel says pid 0: the socket's owner, the listener's uid and
    a mode that not everyone may write prove it; the pid in the reply stands as Gunicorn's own."""
    check_peer(Peer(pid=0, uid=10001, file_uid=10001, file_mode=0o600), path="ctl", expect_pid=7)
    check_peer(Peer(pid=0, uid=10001, file_uid=10001, file_mode=0o660), path="ctl", expect_pid=None)
    with pytest.raises(ControlError) as open_to_all:
        check_peer(Peer(pid=0, uid=10001, file_uid=10001, file_mode=0o666), path="ctl", expect_pid=None)
    assert open_to_all.value.reason is MasterReason.CONTROL_SOCKET_UNTRUSTED
    with pytest.raises(ControlError) as other_owner:
        check_peer(Peer(pid=0, uid=10001, file_uid=0, file_mode=0o600), path="ctl", expect_pid=None)
    assert other_owner.value.reason is MasterReason.CONTROL_SOCKET_UNTRUSTED
