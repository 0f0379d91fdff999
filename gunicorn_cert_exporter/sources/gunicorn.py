"""Pidfile or pid to a proven Gunicorn master, its workers, and a SIGHUP that can't reach another process.

Proof that a process is the master serving a target: it is Gunicorn (its command line, and the script it runs
is Gunicorn's entry point), it holds a listening socket on the target's port, and a worker it forked holds that
same socket. A pid and its start time then name it until the signal is sent.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import psutil

from gunicorn_cert_exporter.model import MasterState, ProcessInfo
from gunicorn_cert_exporter.reasons import MasterReason
from gunicorn_cert_exporter.safe_read import read_regular
from gunicorn_cert_exporter.sources import listeners
from gunicorn_cert_exporter.sources.listeners import Binding

_PIDFILE_CAP = 64  # "4194304\n" is 8 bytes; anything longer is not a pidfile
_SCRIPT_CAP = 16384
# The console script pip writes, Gunicorn's own __main__.py, and setuptools' older entry-point scripts (Debian).
_ENTRY_POINT = re.compile(rb"from gunicorn\.app\.wsgiapp import run|'console_scripts',\s*'gunicorn3?'")
_PIDFILE_RETRIES = 10
_PIDFILE_RETRY_SECONDS = 0.05  # Gunicorn unlinks and rewrites its pidfile on every HUP
_PYTHON_NAMES = ("python", "pypy")
_GUNICORN_SCRIPT = re.compile(r"^gunicorn3?$")  # the console script; Debian's package names it gunicorn3
_GUNICORN_MAIN = re.compile(r"(^|/)gunicorn/__main__\.py$")  # what `python -m gunicorn` re-execs as on USR2


@dataclass(frozen=True, slots=True)
class MasterIdentity:
    """A process as it was proven: pid and start time together name exactly one process."""

    pid: int
    start_time: float


SignalSender = Callable[[MasterIdentity, int], None]
"""Send a signal to exactly that process, or raise ProcessLookupError/PermissionError."""


def read_pidfile(path: str, *, sleep: Callable[[float], None] = time.sleep) -> tuple[int | None, MasterReason | None]:
    """Read a pid from a pidfile, retrying briefly while Gunicorn rewrites it; never blocks on a FIFO or device."""
    for attempt in range(_PIDFILE_RETRIES):
        try:
            text = read_regular(path, _PIDFILE_CAP + 1).strip()
        except FileNotFoundError:
            text = b""
        except OSError:  # a FIFO, device or directory (refused unread), or unreadable
            return None, MasterReason.PIDFILE_INVALID
        if len(text) > _PIDFILE_CAP:
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
        return bool(args) and bool(_GUNICORN_SCRIPT.match(os.path.basename(args[0])) or _GUNICORN_MAIN.search(args[0]))
    return False


def script_of(cmdline: tuple[str, ...]) -> str | None:
    """Return the script file a Gunicorn command line runs; None for a title or ``-m gunicorn``."""
    if not cmdline or cmdline[0].startswith("gunicorn: "):
        return None
    if _GUNICORN_SCRIPT.match(os.path.basename(cmdline[0])):
        return cmdline[0]
    args = [a for a in cmdline[1:] if not a.startswith("-") or a == "-m"]
    return None if not args or args[0] == "-m" else args[0]


def _is_worker_title(cmdline: tuple[str, ...]) -> bool:
    return bool(cmdline) and cmdline[0].startswith("gunicorn: worker")


def inspect(pid: int, *, pidfile: str | None = None) -> MasterState:
    """Tell whether ``pid`` is a live Gunicorn master and describe it with its workers.

    A child with the master's own command line is a worker, unless it is a new master after USR2: its pid is in
    ``<pidfile>.2``, or it has children of its own. No worker count or reload ever waits on that one.
    """
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
    named_successor = read_pidfile(pidfile + ".2", sleep=lambda _s: None)[0] if pidfile else None
    workers, successor = [], None
    try:
        children = proc.children()
    except psutil.Error:
        children = []
    for child in children:
        try:
            child_info = process_info(child)
            grandchildren = child.children()
        except psutil.Error:
            continue  # a worker that exited while we looked
        # USR2 first: the new master is named in <pidfile>.2, titled as a master (setproctitle), or has Gunicorn
        # children of its own; it is never one of our workers, whatever its command line says.
        if (
            child.pid == named_successor
            or _is_master_title(child_info.cmdline)
            or _has_gunicorn_children(grandchildren, child_info.cmdline)
        ):
            successor = child.pid
            continue
        if child_info.cmdline == info.cmdline or _is_worker_title(child_info.cmdline):
            workers.append(child_info)
    return MasterState(pid=pid, start_time=info.start_time, workers=tuple(workers), successor=successor)


def _is_master_title(cmdline: tuple[str, ...]) -> bool:
    return bool(cmdline) and cmdline[0].startswith("gunicorn: master")


def _has_gunicorn_children(children: list[psutil.Process], cmdline: tuple[str, ...]) -> bool:
    """Tell whether a process has workers: children with its own command line, or titled as Gunicorn workers."""
    for child in children:
        try:
            command = tuple(child.cmdline())
        except psutil.Error:
            continue
        if command == cmdline or _is_worker_title(command):
            return True
    return False


def _parent_is_gunicorn(info: ProcessInfo) -> bool:
    try:
        parent = process_info(psutil.Process(info.ppid))
    except (psutil.Error, ValueError):
        return False
    # Without setproctitle a worker's command line is its master's; a master's parent is not gunicorn.
    return is_gunicorn(parent.cmdline) and not _is_worker_title(parent.cmdline)


def prove(state: MasterState, binding: Binding) -> MasterState:
    """Prove that a live master serves the binding: it listens there, a worker shares it, it runs Gunicorn."""
    if not state.up or state.pid is None:
        return state
    pid = state.pid
    try:
        held = listeners.held_listeners(pid, binding)
        proc = psutil.Process(pid)
        cmdline, cwd = tuple(proc.cmdline()), proc.cwd()
    except (psutil.AccessDenied, PermissionError):
        return replace(state, error=MasterReason.PERMISSION_DENIED, detail=f"can't read the sockets of {pid}")
    except psutil.NoSuchProcess:
        return replace(state, error=MasterReason.NO_PROCESS, detail=f"no process {pid}")
    except (NotImplementedError, OSError, psutil.Error) as exc:
        return replace(state, error=MasterReason.UNSUPPORTED_PLATFORM, detail=f"no /proc: {exc}")
    if not held:
        detail = f"{pid} holds no listening socket on port {binding.port}"
        return replace(state, error=MasterReason.NOT_LISTENING, detail=detail)
    if not runs_gunicorn(cmdline, cwd):
        script = script_of(cmdline) or ""
        detail = f"{pid} runs {os.path.basename(script)}, which is not Gunicorn's entry point"
        return replace(state, error=MasterReason.NOT_GUNICORN, detail=detail)
    if not any(_shares(worker.pid, held) for worker in state.workers):
        detail = f"no worker of {pid} holds its listening socket on port {binding.port}"
        return replace(state, error=MasterReason.NOT_LISTENING, detail=detail)
    return state


def runs_gunicorn(cmdline: tuple[str, ...], cwd: str) -> bool:
    """Tell whether a Gunicorn-looking command line runs Gunicorn's real entry point, not a script of that name."""
    script = script_of(cmdline)
    return script is None or _is_entry_point(os.path.join(cwd, script))


def _is_entry_point(path: str) -> bool:
    try:
        return bool(_ENTRY_POINT.search(read_regular(path, _SCRIPT_CAP)))
    except OSError:
        return False


def _shares(pid: int, inodes: set[int]) -> bool:
    try:
        return bool(listeners.socket_inodes(pid) & inodes)
    except OSError:
        return False


def locate(*, pidfile: str | None, pid: int | None, binding: Binding | None = None) -> MasterState:
    """Find the master named by a pidfile or a pid; with a binding, prove that it serves it."""
    if pid is None:
        if pidfile is None:
            return MasterState(error=MasterReason.PIDFILE_MISSING, detail="no pidfile or pid configured")
        pid, reason = read_pidfile(pidfile)
        if pid is None:
            return MasterState(error=reason, detail=f"pidfile {pidfile}")
    state = inspect(pid, pidfile=pidfile)
    return state if binding is None else prove(state, binding)


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
