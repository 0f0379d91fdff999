"""Numbers from a control socket are validated where they are read (issue 25, items 1 and 2).

A fake control socket answers one command with a hostile reply; the exporter serves HTTP as `serve` wires it. The
target gets its own reason (``control_socket_error``, a short detail), no reload is sent to an unproven master, and
every other source keeps publishing fresh scans: a renewed file shows in /metrics, / answers 200, and
/api/v1/status is strict JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gunicorn_cert_exporter.sources import certs
from tests.support import DAY, NOW, PKI, ControlServer, Issued, StartExporter, TLSServer, server_context

_HUGE = "1" + "0" * 309  # 10**309: float() of it overflows


class HostileControl(ControlServer):
    """A fake master serving ``port``; its reply to ``command`` is ``reply``, verbatim (JSON or not)."""

    def __init__(self, path: Path, *, port: int, command: str, reply: bytes) -> None:
        self.command, self.reply = command, reply
        super().__init__(path, pid=os.getpid(), port=port, started=time.time() - 3600)  # the real listener

    def handle(self, conn: socket.socket) -> None:
        """Answer as ControlServer does, except ``command``."""
        with conn, contextlib.suppress(OSError, ValueError, struct.error):
            conn.settimeout(2)
            (length,) = struct.unpack(">I", conn.recv(4, socket.MSG_WAITALL))
            request = json.loads(conn.recv(length, socket.MSG_WAITALL))
            self.commands.append(request["command"])
            body = json.dumps({"id": request["id"], "status": "ok", "data": self._answer(request["command"])}).encode()
            if request["command"] == self.command:
                body = self.reply
            conn.sendall(struct.pack(">I", len(body)) + body)


def _ok(data: str) -> bytes:
    return b'{"id": 1, "status": "ok", "data": ' + data.encode() + b"}"


HOSTILE = {
    "pid 10**309": ("show stats", _ok(f'{{"pid": {_HUGE}, "uptime": 100, "reloads": 0}}')),
    "uptime NaN": ("show stats", _ok('{"pid": 4242, "uptime": NaN, "reloads": 0}')),
    "uptime -1e300": ("show stats", _ok('{"pid": 4242, "uptime": -1e300, "reloads": 0}')),
    "uptime over 100 years": ("show stats", _ok('{"pid": 4242, "uptime": 3.2e9, "reloads": 0}')),
    "pid Infinity": ("show stats", _ok('{"pid": Infinity, "uptime": 100}')),
    "uptime 1e400": ("show stats", _ok('{"pid": 4242, "uptime": 1e400}')),
    "pid -1": ("show stats", _ok('{"pid": -1, "uptime": 100}')),
    "pid over pid_max": ("show stats", _ok('{"pid": 4194305, "uptime": 100}')),
    "pid as a string": ("show stats", _ok('{"pid": "4242", "uptime": 100}')),
    "pid true": ("show stats", _ok('{"pid": true, "uptime": 100}')),
    "reloads -1": ("show stats", _ok('{"pid": 4242, "uptime": 100, "reloads": -1}')),
    "1 MiB of [": ("show stats", b"[" * (1 << 20)),
    "worker pid 1e400": ("show workers", _ok('{"workers": [{"pid": 1e400}]}')),
    "workers not a list": ("show workers", _ok('{"workers": "11,12"}')),
}


class Rig:
    """A target whose cert_file holds a new leaf while its endpoint (a real TLS server) serves the old one, its
    master a fake control socket; beside it a plain file source, ``other.pem``."""

    def __init__(self, directory: Path, pki: PKI, root: Issued) -> None:
        self.directory, self.pki, self.root = directory, pki, root
        old, new = pki.leaf(root), pki.leaf(root)
        (directory / "cert.pem").write_bytes(new.cert_pem)
        (directory / "key.pem").write_bytes(new.key_pem)
        self.renew(days=30)
        self.tls = TLSServer("127.0.0.1", context=server_context((old,)))
        self.socket = directory / "ctl"

    def renew(self, *, days: int) -> float:
        """Write other.pem with a leaf valid for ``days`` more; return its not_after."""
        leaf = self.pki.leaf(self.root, not_after=NOW + days * DAY)
        (self.directory / "other.pem").write_bytes(leaf.cert_pem)
        return certs.cert_facts(leaf.cert).not_after

    def config(self, cooldown: str = "0s") -> str:
        d = self.directory
        return (
            "scan: {interval: 1h}\n"
            f"files: [{{paths: ['{d / 'other.pem'}']}}]\n"
            "gunicorn:\n"
            f"  - {{name: api, cert_file: '{d / 'cert.pem'}', key_file: '{d / 'key.pem'}',\n"
            f"     endpoint: '127.0.0.1:{self.tls.port}', control_socket: '{self.socket}', timeout: 1s,\n"
            f"     reload: {{enabled: true, after: 0s, cooldown: {cooldown}, verify_timeout: 1s}}}}\n"
        )


@pytest.fixture
def rig(tmp_path: Path, pki: PKI, root: Issued) -> Iterator[Rig]:
    made = Rig(tmp_path, pki, root)
    yield made
    made.tls.close()


def _strict(text: bytes) -> object:
    def refuse(constant: str) -> object:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_control_socket_reply_is_that_targets_error_and_nothing_else(
    rig: Rig, run_exporter: StartExporter, case: str
) -> None:
    command, reply = HOSTILE[case]
    server = HostileControl(rig.socket, port=rig.tls.port, command=command, reply=reply)
    try:
        exporter = run_exporter(rig.config())
        exporter.scan_now()
        metrics = exporter.metrics()
        assert metrics['gunicorn_cert_master_error{reason="control_socket_error",target="api"}'] == 1.0
        assert metrics['gunicorn_cert_master_up{target="api"}'] == 0.0
        assert not [name for name in metrics if "scan_failed" in name]
        master = exporter.service.snapshot().targets[0].master
        assert len(master.detail) < 300 and _HUGE not in master.detail and command in server.commands
        assert "reload" not in server.commands  # nothing sent to a master that was never proven
        # The other sources keep publishing fresh scans: a renewed file shows.
        renewed = rig.renew(days=60)
        exporter.scan_now()
        other = (
            f'gunicorn_cert_file_not_after_timestamp_seconds{{entry="",index="0",path="{rig.directory / "other.pem"}"}}'
        )
        assert exporter.metrics()[other] == renewed
        status, _ = exporter.get("/")
        assert status == 200
        status, body = exporter.get("/api/v1/status")
        assert status == 200 and _strict(body)
    finally:
        server.close()


def test_the_same_rig_with_a_sane_socket_proves_the_master_and_reloads(rig: Rig, run_exporter: StartExporter) -> None:
    """What the hostile replies above would have had: a proven master and a reload sent to it."""
    server = ControlServer(rig.socket, pid=os.getpid(), port=rig.tls.port, started=time.time() - 3600)
    try:
        exporter = run_exporter(rig.config())
        exporter.scan_now()
        metrics = exporter.metrics()
        assert metrics['gunicorn_cert_master_up{target="api"}'] == 1.0
        assert metrics['gunicorn_cert_fingerprint_mismatch{address="127.0.0.1",target="api"}'] == 1.0
        assert server.commands.count("reload") == 1
    finally:
        server.close()
