"""Processes and ports: /proc reads, graceful stops, free loopback ports, work done as nobody."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path


def proc_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name: state first, then ppid, ... (raises OSError if gone)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """Tell whether ``pid`` runs (a zombie does not)."""
    try:
        return proc_stat(pid)[0] != "Z"
    except OSError:
        return False


def children(pid: int) -> list[int]:
    """The live child processes of ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = proc_stat(int(entry))
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Stop a child gracefully (SIGTERM), then SIGKILL after 15 s; nothing if it already exited."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def as_nobody(work: Callable[[], str]) -> str:
    """Run ``work`` in a forked child that dropped to uid/gid nobody (when run as root); return what it returned."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover  (the child)
        try:
            if os.getuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            try:
                os.write(write_fd, work().encode())
            except BaseException as exc:
                os.write(write_fd, f"child failed: {exc!r}".encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    with os.fdopen(read_fd, "rb") as pipe:
        return pipe.read().decode()


_ACL = "system.posix_acl_access"
_SEARCH = 1


def _acl_granting_search(mode: int, uid: int) -> bytes:
    """A POSIX access ACL equal to ``mode`` plus search (x) for one more user (acl(5) xattr format)."""
    entries = [
        (0x01, (mode >> 6) & 7, 0xFFFFFFFF),  # user::
        (0x02, _SEARCH, uid),  # user:uid:--x
        (0x04, (mode >> 3) & 7, 0xFFFFFFFF),  # group::
        (0x10, ((mode >> 3) & 7) | _SEARCH, 0xFFFFFFFF),  # mask
        (0x20, mode & 7, 0xFFFFFFFF),  # other::
    ]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, ident) for tag, perm, ident in entries)


@contextlib.contextmanager
def searchable_by(uid: int, path: Path) -> Iterator[None]:
    """Let ``uid`` search every directory on the way to ``path`` for a while (as root), then put them back.

    Gunicorn's workers drop to nobody and may import lazily from this checkout's virtual environment: a checkout
    under a 0700 directory (a mktemp folder, /root) is out of their reach, though nothing about the test needs that.
    Directories nobody can already search, and those that carry an ACL of their own, are left as they are.
    """
    granted: list[Path] = []
    try:
        for directory in reversed(path.resolve().parents):
            info = directory.stat()
            if info.st_mode & 0o001 or info.st_uid == uid or _has_acl(directory):
                continue
            os.setxattr(directory, _ACL, _acl_granting_search(info.st_mode & 0o777, uid))
            granted.append(directory)
        yield
    finally:
        for directory in granted:
            with contextlib.suppress(OSError):
                os.removexattr(directory, _ACL)


def _has_acl(directory: Path) -> bool:
    try:
        os.getxattr(directory, _ACL)
    except OSError:
        return False
    return True
