"""The Gunicorn masters on this host, found in /proc, with what each was told: I/O in, frozen values out.

A master is a process that runs Gunicorn's real entry point and has Gunicorn children (its workers); a worker is
a Gunicorn process whose parent is a master and which has none. A script that is merely named ``gunicorn`` is not
Gunicorn. Nothing of a master's is ever executed: its command line, ``GUNICORN_CMD_ARGS`` and config file are
read as text (see ``gunicorn_settings``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import psutil

from gunicorn_cert_exporter.safe_read import read_regular
from gunicorn_cert_exporter.sources import certs, gunicorn, listeners
from gunicorn_cert_exporter.sources.gunicorn_settings import Learned, learn
from gunicorn_cert_exporter.sources.listeners import Listener

_CMDLINE_CAP = 64 * 1024
_ENVIRON_CAP = 1024 * 1024  # the kernel allows more, but Gunicorn's variable lives near the start in practice
_CONFIG_CAP = 1024 * 1024  # a Gunicorn config file is a few hundred bytes
_ENV_NAME = b"GUNICORN_CMD_ARGS="
_MAX_PROCESSES = 100_000


@dataclass(frozen=True, slots=True)
class Candidate:
    """A process whose command line is Gunicorn's (a master or a worker)."""

    pid: int
    ppid: int
    cmdline: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FoundMaster:
    """A Gunicorn master on this host, what it listens on, and what it was told (or why that can't be read)."""

    pid: int
    start_time: float
    listeners: tuple[Listener, ...] = ()
    learned: Learned | None = None
    denied: str = ""  # why /proc would not tell (another user's process, hidepid): the reason permission_denied


def gunicorn_processes(proc: str = "/proc") -> list[Candidate]:
    """Return every process whose command line is Gunicorn's; one bounded read per process, most of them."""
    found = []
    for count, name in enumerate(_pids(proc)):
        if count >= _MAX_PROCESSES:
            break
        try:
            raw = _read_proc(f"{proc}/{name}/cmdline", _CMDLINE_CAP)
        except OSError:
            continue  # gone, or hidden
        if b"gunicorn" not in raw:
            continue  # the fast path: most processes never get further
        cmdline = tuple(part.decode(errors="replace") for part in raw.rstrip(b"\0").split(b"\0"))
        if not gunicorn.is_gunicorn(cmdline):
            continue
        try:
            ppid = psutil.Process(int(name)).ppid()
        except psutil.Error:
            continue
        found.append(Candidate(pid=int(name), ppid=ppid, cmdline=cmdline))
    return found


def _read_proc(path: str, cap: int) -> bytes:
    """Read at most ``cap`` bytes of a /proc file: never a FIFO or a device, so no fstat (the walk's hot path)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks, left = [], cap
        while left > 0:
            chunk = os.read(fd, min(left, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _pids(proc: str) -> Iterator[str]:
    try:
        names = os.listdir(proc)
    except OSError:
        return  # no /proc (macOS): nothing to discover, nothing to crash on
    yield from (name for name in names if name.isdigit())


def masters_among(candidates: list[Candidate]) -> list[Candidate]:
    """Keep the masters: Gunicorn processes with Gunicorn children (after USR2 the new master is one too)."""
    parents = {c.ppid for c in candidates}
    return [c for c in candidates if c.pid in parents and not c.cmdline[0].startswith("gunicorn: worker")]


def find_masters(proc: str = "/proc") -> tuple[FoundMaster, ...]:
    """Find the Gunicorn masters this process can see, and read what each was told."""
    out = []
    tables: dict[str, list[Listener]] = {}  # the listening sockets of each network namespace, read once per pass
    for candidate in masters_among(gunicorn_processes(proc)):
        try:
            start_time = psutil.Process(candidate.pid).create_time()
        except psutil.Error:
            continue
        found = _describe(candidate, start_time, proc, tables)
        if found is not None:
            out.append(found)
    return tuple(out)


def _describe(
    candidate: Candidate, start_time: float, proc: str, tables: dict[str, list[Listener]]
) -> FoundMaster | None:
    pid = candidate.pid
    try:
        cwd = os.readlink(f"{proc}/{pid}/cwd")
        environment = _cmd_args(_read_proc(f"{proc}/{pid}/environ", _ENVIRON_CAP))
        held = listeners.socket_inodes(pid)
        # /proc/PID/net/tcp is the whole namespace's table, often the costliest read of the pass: once per namespace.
        namespace = _namespace(proc, pid)
        if namespace not in tables:
            tables[namespace] = listeners.listening(pid)
        listening = tuple(entry for entry in tables[namespace] if entry.inode in held)
    except PermissionError:
        return FoundMaster(pid=pid, start_time=start_time, denied=f"can't read /proc/{pid} (another user's?)")
    except OSError:
        return FoundMaster(pid=pid, start_time=start_time, denied=f"/proc/{pid} went away while read")
    if not gunicorn.runs_gunicorn(candidate.cmdline, cwd):
        return None  # a script named gunicorn is not Gunicorn
    learned = learn(cmdline=candidate.cmdline, environment=environment, cwd=cwd, read_config=_read_config)
    return FoundMaster(pid=pid, start_time=start_time, listeners=listening, learned=learned)


def _namespace(proc: str, pid: int) -> str:
    try:
        return os.readlink(f"{proc}/{pid}/ns/net")
    except FileNotFoundError:
        return f"pid {pid}"  # a kernel without network namespaces: read this process's table on its own


def _cmd_args(environ: bytes) -> str | None:
    for entry in environ.split(b"\0"):
        if entry.startswith(_ENV_NAME):
            return entry[len(_ENV_NAME) :].decode(errors="replace")
    return None


def _read_config(path: str) -> bytes | None:
    """Read a config file, bounded, never a FIFO or device; None when there is none."""
    try:
        data = read_regular(path, _CONFIG_CAP + 1)
    except FileNotFoundError:
        return None
    if len(data) > _CONFIG_CAP:
        raise OSError(f"larger than {_CONFIG_CAP} bytes")
    return data


def told(pid: int, proc: str = "/proc") -> Learned | None:
    """Read what one master was told (command line, GUNICORN_CMD_ARGS, config file); None if /proc won't say."""
    try:
        raw = read_regular(f"{proc}/{pid}/cmdline", _CMDLINE_CAP)
        cwd = os.readlink(f"{proc}/{pid}/cwd")
        environment = _cmd_args(read_regular(f"{proc}/{pid}/environ", _ENVIRON_CAP))
    except OSError:
        return None  # gone, another user's (no root), or another PID namespace
    cmdline = tuple(part.decode(errors="replace") for part in raw.rstrip(b"\0").split(b"\0"))
    return learn(cmdline=cmdline, environment=environment, cwd=cwd, read_config=_read_config)


_CERT_CAP = 1024 * 1024


def first_dns_name(cert_file: str) -> str | None:
    """Return the first DNS name of the leaf in a cert file (a discovered target's SNI); None if it has none."""
    try:
        data = read_regular(cert_file, _CERT_CAP)
    except OSError:
        return None  # the target's own file scan reports why
    parsed = certs.parse(data, name=cert_file)
    sans = parsed.certs[0].sans if parsed.certs else ()
    return next((name[4:] for name in sans if name.startswith("DNS:")), None)
