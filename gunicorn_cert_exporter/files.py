"""Paths, globs and directories to FileResults: stat, read under a size cap, parse, skip what is unchanged."""

from __future__ import annotations

import errno
import glob
import hashlib
import logging
import os
import re
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from gunicorn_cert_exporter import certs
from gunicorn_cert_exporter.config import FileSource
from gunicorn_cert_exporter.model import FileIdentity, FileReason, FileResult, Parsed, PatternResult

_PASSWORD_REASONS = frozenset({FileReason.PASSWORD_REQUIRED, FileReason.BAD_PASSWORD, FileReason.PASSWORD_UNAVAILABLE})
_log = logging.getLogger("gunicorn_cert_exporter.files")
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class Wanted:
    """One file to scan, with how to parse it."""

    path: str
    fmt: certs.Format = "auto"
    password_file: str | None = None
    password_env: str | None = None


def expand(sources: Sequence[FileSource]) -> tuple[list[Wanted], list[PatternResult]]:
    """Resolve configured paths, globs and directories into files, each once, in a stable order."""
    wanted: dict[str, Wanted] = {}
    patterns: list[PatternResult] = []
    for source in sources:
        excludes = [_glob_regex(p) for p in source.exclude]
        for pattern in source.paths:
            matches = [p for p in _matches(pattern) if not _excluded(p, excludes)]
            patterns.append(PatternResult(pattern=pattern, matches=len(matches)))
            for path in matches:
                wanted.setdefault(
                    path,
                    Wanted(path, source.format, source.password_file, source.password_env),
                )
    return list(wanted.values()), patterns


class FileScanner:
    """Scan files, re-parsing only those whose identity (device, inode, size, mtime) changed."""

    def __init__(self, *, clock: Callable[[], float], max_size: int) -> None:
        self._clock = clock
        self._max_size = max_size
        self._cache: dict[str, FileResult] = {}

    def scan(self, wanted: Iterable[Wanted]) -> tuple[FileResult, ...]:
        """Scan each file; one broken file never stops the others."""
        previous, self._cache = self._cache, {}
        results = []
        for item in wanted:
            result = self.scan_one(item, previous.get(item.path))
            self._cache[item.path] = result
            results.append(result)
        return tuple(results)

    def scan_one(self, item: Wanted, previous: FileResult | None = None) -> FileResult:
        """Scan one file given what the last scan found there."""
        try:
            info = os.stat(item.path)
        except OSError as exc:
            return _failed(item.path, _os_reason(exc), exc, previous)
        early = self._refuse(item.path, info, previous)
        if early is not None:
            return early
        identity = _identity(info)
        if previous is not None and previous.identity == identity and previous.error not in _PASSWORD_REASONS:
            return previous
        try:
            data, info = self._read(item.path)
        except OSError as exc:
            return _failed(item.path, _os_reason(exc), exc, previous)
        early = self._refuse(item.path, info, previous)
        if early is not None:
            return early
        if len(data) > self._max_size:  # grew between fstat and read
            return _failed(item.path, FileReason.TOO_LARGE, "over the size cap", previous)
        return self._parse(item, data, _identity(info), previous)

    def _refuse(self, path: str, info: os.stat_result, previous: FileResult | None) -> FileResult | None:
        if not stat.S_ISREG(info.st_mode):
            kind = _file_kind(info.st_mode)
            return _failed(path, FileReason.NOT_REGULAR_FILE, f"{kind}, not a regular file", previous)
        if info.st_size > self._max_size:
            detail = f"{info.st_size} bytes is over the {self._max_size} byte cap"
            return _failed(path, FileReason.TOO_LARGE, detail, previous)
        return None

    def _read(self, path: str) -> tuple[bytes, os.stat_result]:
        # O_NONBLOCK: a path swapped for a FIFO after the stat must not block the scan on open().
        fd = os.open(path, _OPEN_FLAGS)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return b"", info
            chunks, remaining = [], self._max_size + 1
            while remaining > 0:
                chunk = os.read(fd, min(remaining, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
            return b"".join(chunks), info
        finally:
            os.close(fd)

    def _parse(self, item: Wanted, data: bytes, identity: FileIdentity, previous: FileResult | None) -> FileResult:
        password, password_error = _password(item)
        if password_error is not None:
            parsed = Parsed(error=FileReason.PASSWORD_UNAVAILABLE, detail=password_error)
        else:
            try:
                parsed = certs.parse(data, fmt=item.fmt, password=password, name=item.path)
            except Exception as exc:  # noqa: BLE001  (hostile bytes meet a third-party parser: report, don't die)
                _log.warning("parser raised on hostile input", extra={"path": item.path, "error": type(exc).__name__})
                parsed = Parsed(error=FileReason.PARSE_ERROR, detail=f"unparseable ({type(exc).__name__})")
        digest = hashlib.sha256(data).hexdigest()
        if previous is None or previous.content_sha256 is None:
            changed_at: float | None = identity.mtime_ns / 1e9
        elif previous.content_sha256 != digest:
            changed_at = self._clock()
        else:
            changed_at = previous.changed_at
        return FileResult(
            path=item.path,
            certs=parsed.certs,
            keys=parsed.keys,
            error=parsed.error,
            detail=parsed.detail,
            changed_at=changed_at,
            identity=identity,
            content_sha256=digest,
        )


def _matches(pattern: str) -> list[str]:
    if glob.has_magic(pattern):
        return sorted(p for p in glob.glob(pattern, recursive=True) if not os.path.isdir(p))
    if os.path.isdir(pattern):
        # Kubernetes Secret volumes hold ..data and ..<timestamp> entries next to the real names.
        with os.scandir(pattern) as entries:
            return sorted(e.path for e in entries if not e.name.startswith(".") and not e.is_dir(follow_symlinks=True))
    return [pattern]


@lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a glob where ``**`` spans directories and ``*`` does not."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _excluded(path: str, excludes: list[re.Pattern[str]]) -> bool:
    base = os.path.basename(path)
    return any(rx.match(path) or rx.match(base) for rx in excludes)


def _identity(info: os.stat_result) -> FileIdentity:
    return FileIdentity(info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _password(item: Wanted) -> tuple[bytes | None, str | None]:
    if item.password_env:
        value = os.environ.get(item.password_env)
        if value is None:
            return None, f"environment variable {item.password_env} is not set"
        return value.encode(), None
    if item.password_file:
        try:
            with open(item.password_file, "rb") as handle:
                return handle.read(4096).rstrip(b"\r\n"), None
        except OSError as exc:
            return None, f"password file {item.password_file}: {exc.strerror or type(exc).__name__}"
    return None, None


def _os_reason(exc: OSError) -> FileReason:
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return FileReason.NOT_FOUND
    if isinstance(exc, PermissionError):
        return FileReason.PERMISSION_DENIED
    if exc.errno == errno.ELOOP:
        return FileReason.SYMLINK_LOOP
    return FileReason.READ_ERROR


def _failed(path: str, reason: FileReason, cause: object, previous: FileResult | None) -> FileResult:
    detail = cause if isinstance(cause, str) else (getattr(cause, "strerror", None) or type(cause).__name__)
    changed_at = previous.changed_at if previous is not None else None
    return FileResult(path=path, error=reason, detail=str(detail), changed_at=changed_at)


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "special file"
