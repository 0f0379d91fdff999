"""Pidfile or pid to a proven Gunicorn master, its workers, and a SIGHUP that can't reach another process."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from gunicorn_cert_exporter.model import MasterReason, MasterState, ProcessInfo

_PIDFILE_RETRIES = 10
_PIDFILE_RETRY_SECONDS = 0.05  # Gunicorn unlinks and rewrites its pidfile on every HUP
_PYTHON_NAMES = ("python", "pypy")
_GUNICORN_SCRIPT = re.compile(r"^gunicorn3?$")  # the console script; Debian's package names it gunicorn3


@dataclass(frozen=True, slots=True)
class MasterIdentity:
    """A process as it was proven: pid and start time together name exactly one process."""

    pid: int
    start_time: float


SignalSender = Callable[[MasterIdentity, int], None]
"""Send a signal to exactly that process, or raise ProcessLookupError/PermissionError."""


def read_pidfile(path: str, *, sleep: Callable[[float], None] = time.sleep) -> tuple[int | None, MasterReason | None]:
    """Read a pid from a pidfile, retrying briefly while Gunicorn rewrites it."""
    for attempt in range(_PIDFILE_RETRIES):
        try:
            with open(path, "rb") as handle:
                text = handle.read(64).strip()
        except FileNotFoundError:
            text = b""
        except OSError:
            return None, MasterReason.PIDFILE_INVALID
        if text:
            return (int(text), None) if text.isdigit() and int(text) > 1 else (None, MasterReason.PIDFILE_INVALID)
        if attempt + 1 < _PIDFILE_RETRIES:
            sleep(_PIDFILE_RETRY_SECONDS)
    return None, MasterReason.PIDFILE_MISSING


def process_info(proc: psutil.Process) -> ProcessInfo:
    """Describe a process; raises psutil errors when it is gone or hidden."""
    with proc.oneshot():
        return ProcessInfo(
            pid=proc.pid,
            ppid=proc.ppid(),
            start_time=proc.create_time(),
            cmdline=tuple(proc.cmdline()),
            name=proc.name(),
        )


def is_gunicorn(cmdline: tuple[str, ...]) -> bool:
    """Tell whether a command line is Gunicorn itself (not a shell or tool that merely mentions it)."""
    if not cmdline:
        return False
    if cmdline[0].startswith("gunicorn: "):  # setproctitle installed
        return True
    first = os.path.basename(cmdline[0])
    if _GUNICORN_SCRIPT.match(first):
        return True
    if first.startswith(_PYTHON_NAMES):
        args = [a for a in cmdline[1:] if not a.startswith("-") or a == "-m"]
        if args[:2] == ["-m", "gunicorn"]:
            return True
        # The script's exact name: "gunicorn-cert-exporter" or "gunicorn_start" are other programs.
        return bool(args) and bool(_GUNICORN_SCRIPT.match(os.path.basename(args[0])))
    return False


def _is_worker_title(cmdline: tuple[str, ...]) -> bool:
    return bool(cmdline) and cmdline[0].startswith("gunicorn: worker")


def inspect(pid: int) -> MasterState:
    """Prove that ``pid`` is a live Gunicorn master and describe it with its workers."""
    try:
        proc = psutil.Process(pid)
        info = process_info(proc)
    except psutil.NoSuchProcess:
        return MasterState(pid=pid, error=MasterReason.NO_PROCESS, detail=f"no process {pid}")
    except psutil.AccessDenied:
        return MasterState(pid=pid, error=MasterReason.PERMISSION_DENIED, detail=f"can't inspect {pid}")
    except (NotImplementedError, OSError) as exc:
        return MasterState(pid=pid, error=MasterReason.UNSUPPORTED_PLATFORM, detail=str(exc))
    if not is_gunicorn(info.cmdline):
        return MasterState(pid=pid, error=MasterReason.NOT_GUNICORN, detail=f"{info.name} is not gunicorn")
    if _is_worker_title(info.cmdline) or _parent_is_gunicorn(info):
        return MasterState(pid=pid, error=MasterReason.NOT_MASTER, detail=f"{pid} is a gunicorn worker")
    workers = []
    try:
        children = proc.children()
    except psutil.Error:
        children = []
    for child in children:
        try:
            child_info = process_info(child)
        except psutil.Error:
            continue  # a worker that exited while we looked
        if child_info.cmdline == info.cmdline or _is_worker_title(child_info.cmdline):
            workers.append(child_info)
    return MasterState(pid=pid, start_time=info.start_time, workers=tuple(workers))


def _parent_is_gunicorn(info: ProcessInfo) -> bool:
    try:
        parent = process_info(psutil.Process(info.ppid))
    except (psutil.Error, ValueError):
        return False
    # Without setproctitle a worker's command line is its master's; a master's parent is not gunicorn.
    return is_gunicorn(parent.cmdline) and not _is_worker_title(parent.cmdline)


def locate(*, pidfile: str | None, pid: int | None) -> MasterState:
    """Find and prove the master named by a pidfile or a pid."""
    if pid is None:
        if pidfile is None:
            return MasterState(error=MasterReason.PIDFILE_MISSING, detail="no pidfile or pid configured")
        pid, reason = read_pidfile(pidfile)
        if pid is None:
            return MasterState(error=reason, detail=f"pidfile {pidfile}")
    return inspect(pid)


def still_same_master(identity: MasterIdentity) -> bool:
    """Tell whether the pid still names the very master that was proven (pid reuse safe)."""
    state = inspect(identity.pid)
    return state.up and state.start_time == identity.start_time


_HAS_PIDFD = hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")


def send_signal(identity: MasterIdentity, signum: int, *, use_pidfd: bool = _HAS_PIDFD) -> None:
    """Signal exactly the proven process: through a pidfd where the platform has one (Linux 5.3+).

    Without a pidfd the identity is proven just before ``kill()``: a narrow window remains in which the pid could
    be reused, which only a pidfd closes.
    """
    pidfd_open = getattr(os, "pidfd_open", None)
    pidfd_send = getattr(signal, "pidfd_send_signal", None)
    if not use_pidfd or pidfd_open is None or pidfd_send is None:
        if not still_same_master(identity):
            raise ProcessLookupError(identity.pid)
        os.kill(identity.pid, signum)
        return
    fd = pidfd_open(identity.pid)
    try:
        # The fd pins the process: proving it after opening the fd means the signal reaches what we proved.
        if not still_same_master(identity):
            raise ProcessLookupError(identity.pid)
        pidfd_send(fd, signum)
    finally:
        os.close(fd)
