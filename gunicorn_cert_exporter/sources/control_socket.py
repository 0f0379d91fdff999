"""Gunicorn's control socket (25.1+, the gunicornc protocol): prove, watch and reload a master without its pid.

Every exchange is bounded: one deadline covers connecting (retried while Gunicorn re-creates its socket around a
fork), sending and reading; a reply is capped in size; a path that is not a socket is refused unopened.

Nothing is sent before the listener is proven: the kernel names it (SO_PEERCRED on the connected socket), it must
run as the socket file's owner, and where its pid is visible it must be the master the reply names. In another PID
namespace (a sidecar) the kernel says pid 0: there the owner, the peer's uid and a mode that not everyone may write
are the proof.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gunicorn_cert_exporter.boundary import Count, Pid, Seconds, brief
from gunicorn_cert_exporter.model import MasterState, ProcessInfo
from gunicorn_cert_exporter.reasons import MasterReason

_REPLY_CAP = 1024 * 1024
_RETRY_SECONDS = 0.05
_RETRY_ERRNOS = (errno.ECONNREFUSED, errno.ENOENT, errno.EAGAIN)  # Gunicorn unlinks and re-binds around forks
_PORT = re.compile(r":(\d{1,5})$")  # a port has at most 5 digits (int() of 5,000 refuses)
_START_SLACK = 2.0  # uptime is rounded and read a moment after it was computed: start times within this agree
_MAX_ENTRIES = 65536  # workers or listeners of one master: more is not a Gunicorn master


class _Reply(BaseModel):
    """The envelope of every answer: ``data`` when ``status`` is ok, else an ``error``."""

    model_config = ConfigDict(frozen=True)

    status: str = ""
    data: dict[str, Any] | None = None
    error: Any = None


class _Stats(BaseModel):
    """``show stats``: who the master is and how long it has run (Gunicorn sends more, ignored)."""

    model_config = ConfigDict(strict=True, frozen=True)

    pid: Pid
    uptime: Seconds | None = None  # None before the arbiter recorded its start
    reloads: Count | None = None


class _Pid(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True)

    pid: Pid


class _Workers(BaseModel):
    """``show workers``: the master's live workers."""

    model_config = ConfigDict(strict=True, frozen=True)

    workers: list[_Pid] = Field(default_factory=list, max_length=_MAX_ENTRIES)


class _Listener(BaseModel):
    model_config = ConfigDict(frozen=True)  # lax: Gunicorn's str(listener) and type are plain words

    address: str = ""
    type: str = ""


class _Listeners(BaseModel):
    """``show listeners``: where the master accepts connections."""

    model_config = ConfigDict(strict=True, frozen=True)

    listeners: list[_Listener] = Field(default_factory=list, max_length=_MAX_ENTRIES)


class ControlError(OSError):
    """An exchange with a control socket that failed; ``reason`` says how."""

    def __init__(self, reason: MasterReason, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True, slots=True)
class Peer:
    """Who listens on a control socket, as the kernel says, and who owns the socket file."""

    pid: int  # 0 when the listener is in a PID namespace this process can't see
    uid: int
    file_uid: int
    file_mode: int


def peer_of(sock: socket.socket) -> tuple[int, int]:
    """Return the pid and uid of the process at the other end of a connected Unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return pid, uid


def _proven(sock: socket.socket, path: str, expect_pid: int | None) -> Peer:
    """Read who listens and check it may be trusted; raise ControlError before anything is sent otherwise."""
    try:
        pid, uid = peer_of(sock)
        info = os.stat(path)
    except FileNotFoundError:  # re-created around a fork meanwhile: nothing proven, try again at the next look
        raise ControlError(MasterReason.CONTROL_SOCKET_UNAVAILABLE, f"{path}: gone while connecting") from None
    except OSError as exc:
        raise ControlError(MasterReason.CONTROL_SOCKET_UNTRUSTED, f"{path}: listener unknown ({exc})") from None
    peer = Peer(pid=pid, uid=uid, file_uid=info.st_uid, file_mode=stat.S_IMODE(info.st_mode))
    check_peer(peer, path=path, expect_pid=expect_pid)
    return peer


def check_peer(peer: Peer, *, path: str, expect_pid: int | None) -> None:
    """Raise ControlError unless ``peer`` may be trusted as the master (``expect_pid``, where its pid is visible)."""
    if peer.uid != peer.file_uid:
        detail = f"{path} is owned by uid {peer.file_uid}, its listener runs as uid {peer.uid}"
        raise ControlError(MasterReason.CONTROL_SOCKET_UNTRUSTED, detail)
    if peer.pid == 0 and peer.file_mode & stat.S_IWOTH:
        detail = f"{path} is writable by anyone (mode {peer.file_mode:o}) and its listener's pid is not visible"
        raise ControlError(MasterReason.CONTROL_SOCKET_UNTRUSTED, detail)
    if expect_pid is not None and peer.pid not in (0, expect_pid):
        detail = f"{path}: the listener is pid {peer.pid}, not the master {expect_pid}"
        raise ControlError(MasterReason.PID_MISMATCH, detail)


@dataclass(frozen=True, slots=True)
class ControlView:
    """What a master says about itself through its control socket."""

    pid: int
    uptime: float
    reloads: int
    workers: tuple[int, ...]
    ports: tuple[int, ...]  # the TCP ports of its listeners


def exchange(
    path: str,
    command: str,
    *,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    request_id: int = 1,
    expect_pid: int | None = None,
) -> dict[str, Any]:
    """Send one command and return the reply's ``data``; raise ControlError on any failure within ``timeout``.

    The listener is proven first (``expect_pid``: the master it must be, where its pid is visible).
    """
    data, _peer = _exchange(path, command, timeout=timeout, clock=clock, request_id=request_id, expect_pid=expect_pid)
    return data


def _exchange(
    path: str,
    command: str,
    *,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    request_id: int = 1,
    expect_pid: int | None = None,
) -> tuple[dict[str, Any], Peer]:
    deadline = clock() + timeout
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None  # may appear within the deadline
    except OSError as exc:
        raise ControlError(MasterReason.CONTROL_SOCKET_UNAVAILABLE, f"{path}: {exc.strerror}") from None
    if mode is not None and not stat.S_ISSOCK(mode):
        raise ControlError(MasterReason.CONTROL_SOCKET_INVALID, f"{path} is not a socket")
    with _connect(path, deadline, clock) as sock:
        peer = _proven(sock, path, expect_pid)
        payload = json.dumps({"id": request_id, "command": command, "args": []}).encode()
        try:
            sock.settimeout(max(deadline - clock(), 0.001))
            sock.sendall(struct.pack(">I", len(payload)) + payload)
            (length,) = struct.unpack(">I", _read(sock, 4, deadline, clock))
            reply = _Reply.model_validate_json(_read(sock, _capped(length), deadline, clock))
        except TimeoutError:
            raise ControlError(MasterReason.CONTROL_SOCKET_TIMEOUT, f"{path}: no answer within {timeout}s") from None
        except ValidationError as exc:  # not JSON, nested too deep, or not an object
            raise ControlError(MasterReason.CONTROL_SOCKET_ERROR, f"{path}: bad reply ({brief(exc)})") from None
        except ControlError:
            raise
        except OSError as exc:
            raise ControlError(MasterReason.CONTROL_SOCKET_ERROR, f"{path}: {exc.strerror or exc}") from None
    if reply.status != "ok" or reply.data is None:
        error = str(reply.error)[:200] if reply.error is not None else "malformed"
        raise ControlError(MasterReason.CONTROL_SOCKET_ERROR, f"{path}: {command!r} failed: {error}")
    return reply.data, peer


def _capped(length: int) -> int:
    if length > _REPLY_CAP:
        raise ControlError(MasterReason.CONTROL_SOCKET_ERROR, f"reply of {length} bytes is over the cap")
    return length


def _connect(path: str, deadline: float, clock: Callable[[], float]) -> socket.socket:
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(max(deadline - clock(), 0.001))
        try:
            sock.connect(path)
        except TimeoutError:
            sock.close()
            raise ControlError(MasterReason.CONTROL_SOCKET_TIMEOUT, f"{path}: connect timed out") from None
        except OSError as exc:
            sock.close()
            if exc.errno not in _RETRY_ERRNOS or clock() + _RETRY_SECONDS >= deadline:
                reason = (
                    MasterReason.CONTROL_SOCKET_INVALID
                    if exc.errno in (errno.ENOTSOCK, errno.EPROTOTYPE)
                    else MasterReason.CONTROL_SOCKET_UNAVAILABLE
                )
                raise ControlError(reason, f"{path}: {exc.strerror or exc}") from None
            time.sleep(_RETRY_SECONDS)
            continue
        return sock


def _read(sock: socket.socket, size: int, deadline: float, clock: Callable[[], float]) -> bytes:
    chunks, got = [], 0
    while got < size:
        remaining = deadline - clock()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)  # one deadline for the whole reply: a drip can't stretch it
        chunk = sock.recv(min(size - got, 65536))
        if not chunk:
            raise ControlError(MasterReason.CONTROL_SOCKET_ERROR, "connection closed mid-reply")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def observe(path: str, *, timeout: float) -> ControlView:
    """Ask a master for its stats, workers and listeners (three exchanges under one deadline)."""
    started = time.monotonic()

    def left() -> float:
        return max(timeout - (time.monotonic() - started), 0.001)

    try:
        raw_stats, peer = _exchange(path, "show stats", timeout=left())
        stats = _Stats.model_validate(raw_stats)
        if peer.pid not in (0, stats.pid):  # another process answers in the name of a master
            detail = f"{path}: the listener is pid {peer.pid}, its reply names {stats.pid}"
            raise ControlError(MasterReason.PID_MISMATCH, detail)
        expect = peer.pid or None
        workers = _Workers.model_validate(
            exchange(path, "show workers", timeout=left(), request_id=2, expect_pid=expect)
        )
        listeners = _Listeners.model_validate(
            exchange(path, "show listeners", timeout=left(), request_id=3, expect_pid=expect)
        )
    except ValidationError as exc:  # a pid of 10**309, an uptime of NaN or -1e300, a string for a number
        raise ControlError(MasterReason.CONTROL_SOCKET_ERROR, f"{path}: unexpected reply ({brief(exc)})") from None
    ports = []
    for entry in listeners.listeners:
        match = _PORT.search(entry.address)
        if match and entry.type in ("tcp", "tcp6"):
            ports.append(int(match.group(1)))
    return ControlView(
        pid=stats.pid,
        uptime=stats.uptime or 0.0,
        reloads=stats.reloads or 0,
        workers=tuple(sorted(w.pid for w in workers.workers)),
        ports=tuple(ports),
    )


def reload(path: str, *, timeout: float, pid: int | None = None) -> None:
    """Ask the master ``pid`` to reload (as SIGHUP does); raise ControlError if it is not the listener or refused."""
    exchange(path, "reload", timeout=timeout, request_id=4, expect_pid=pid)


def same_master(view: ControlView, *, pid: int, start_time: float, now: float) -> bool:
    """Tell whether the socket's master is the one proven earlier: same pid and same start time.

    A pid alone proves nothing in a container, where a restarted master is pid 1 again.
    """
    return view.pid == pid and abs((now - view.uptime) - start_time) < _START_SLACK


def _continues(view: ControlView, previous: MasterState | None, now: float) -> bool:
    if previous is None or previous.pid is None or previous.start_time is None:
        return False
    return same_master(view, pid=previous.pid, start_time=previous.start_time, now=now)


def master_state(
    *, view: ControlView, port: int, previous: MasterState | None, previous_at: float | None, now: float
) -> MasterState:
    """Turn what a master said into a MasterState, proven when one of its listeners is on ``port``.

    The socket gives no start time per worker: a worker already known keeps its own, a new one gets the time of
    the previous look (it did not exist then), a lower bound that never makes workers look newer than they are.
    """
    start = now - view.uptime
    known: dict[int, float] = {}
    if _continues(view, previous, now) and previous is not None and previous.start_time is not None:
        start = previous.start_time  # uptime is rounded: keep the series steady
        known = {w.pid: w.start_time for w in previous.workers}  # a restarted master (pid 1 again) has new ones
    first_look = previous_at if previous_at is not None and known else start
    workers = tuple(
        ProcessInfo(pid=pid, ppid=view.pid, start_time=known.get(pid, first_look), cmdline=(), name="worker")
        for pid in view.workers
    )
    state = MasterState(pid=view.pid, start_time=start, workers=workers, channel="control_socket", reloads=view.reloads)
    if port not in view.ports:
        listening = ", ".join(str(p) for p in view.ports) or "none"
        detail = f"master {view.pid} listens on port(s) {listening}, not {port}"
        return MasterState(
            pid=view.pid, start_time=start, error=MasterReason.NOT_LISTENING, detail=detail, channel="control_socket"
        )
    return state
