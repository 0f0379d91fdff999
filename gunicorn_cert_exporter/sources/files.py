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

from gunicorn_cert_exporter.config import FileSource
from gunicorn_cert_exporter.model import FileIdentity, FileReason, FileResult, Parsed, PatternResult
from gunicorn_cert_exporter.sources import certs

_PASSWORD_REASONS = frozenset({FileReason.PASSWORD_REQUIRED, FileReason.BAD_PASSWORD, FileReason.PASSWORD_UNAVAILABLE})
_log = logging.getLogger("gunicorn_cert_exporter.files")
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | os.O_CLOEXEC


Reader = Callable[[str, int], tuple[bytes, os.stat_result]]
"""Read at most ``max_size + 1`` bytes of a path, with the fstat of what was opened."""


def read_capped(path: str, max_size: int) -> tuple[bytes, os.stat_result]:
    """Read a regular file up to one byte past the cap; a non-regular file gives no bytes and never blocks."""
    # O_NONBLOCK: a path swapped for a FIFO after the stat must not block the scan on open().
    fd = os.open(path, _OPEN_FLAGS)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return b"", info
        chunks, remaining = [], max_size + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks), info
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Wanted:
    """One file to scan, with how to parse it."""

    path: str
    fmt: certs.Format = "auto"
    password_file: str | None = None
    password_env: str | None = None


class Finder:
    """Expand paths, globs and directories into files; a directory is listed again only when it changed.

    A directory's listing is kept with its inode and mtime: entries added, removed or renamed (a Kubernetes
    ``..data`` swap included) change the mtime, so an unchanged tree costs one stat per directory.
    """

    def __init__(self) -> None:
        self._listings: dict[str, tuple[tuple[int, int], tuple[tuple[str, bool], ...]]] = {}
        self._seen: dict[str, tuple[tuple[int, int], tuple[tuple[str, bool], ...]]] = {}

    def expand(self, sources: Sequence[FileSource]) -> tuple[list[Wanted], list[PatternResult]]:
        """Resolve configured paths, globs and directories into files, each once, in a stable order."""
        self._seen = {}
        wanted: dict[str, Wanted] = {}
        patterns: list[PatternResult] = []
        for source in sources:
            excludes = [_glob_regex(p) for p in source.exclude]
            for pattern in source.paths:
                matches = self._matches(pattern)
                if excludes:
                    matches = [p for p in matches if not _excluded(p, excludes)]
                patterns.append(PatternResult(pattern=pattern, matches=len(matches)))
                for path in matches:
                    wanted.setdefault(path, Wanted(path, source.format, source.password_file, source.password_env))
        self._listings = self._seen  # directories that left every pattern are forgotten
        return list(wanted.values()), patterns

    def _matches(self, pattern: str) -> list[str]:
        if not glob.has_magic(pattern):
            listing = self._list(pattern)
            if listing is None:
                return [pattern]  # a file, or missing: scan_one says which
            # A directory: its files (Kubernetes Secret volumes hold ..data and ..<timestamp> beside them).
            return sorted(os.path.join(pattern, name) for name, is_dir in listing if not is_dir)
        parts = pattern.split("/")
        static = next(i for i, part in enumerate(parts) if glob.has_magic(part))
        base = "/".join(parts[:static]) or ("/" if pattern.startswith("/") else ".")
        rest = parts[static:]
        depth = None if any("**" in part for part in rest) else len(rest)
        regex = _glob_regex(pattern if base != "." or pattern.startswith("./") else "./" + pattern)
        found: list[str] = []
        self._walk(base, regex, depth, frozenset(), found)
        if base == "." and not pattern.startswith("./"):
            found = [p[2:] for p in found]
        return sorted(found)

    def _walk(
        self, directory: str, regex: re.Pattern[str], depth: int | None, ancestors: frozenset[str], out: list[str]
    ) -> None:
        listing = self._list(directory)
        real = os.path.realpath(directory)
        if listing is None or real in ancestors:  # a symlink back up the tree: follow it once, never loop
            return
        ancestors = ancestors | {real}
        for name, is_dir in listing:
            path = directory.rstrip("/") + "/" + name
            if is_dir:
                if depth is None or depth > 1:
                    self._walk(path, regex, None if depth is None else depth - 1, ancestors, out)
            elif (depth is None or depth == 1) and regex.match(path):
                out.append(path)

    def _list(self, directory: str) -> tuple[tuple[str, bool], ...] | None:
        try:
            info = os.stat(directory)
        except OSError:
            return None
        if not stat.S_ISDIR(info.st_mode):
            return None
        stamp = (info.st_ino, info.st_mtime_ns)
        cached = self._listings.get(directory) or self._seen.get(directory)
        if cached is None or cached[0] != stamp:
            try:
                with os.scandir(directory) as entries:
                    listing = tuple(sorted((e.name, _is_dir(e)) for e in entries if not e.name.startswith(".")))
            except OSError:
                return None
            cached = (stamp, listing)
        self._seen[directory] = cached
        return cached[1]


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:
        return False


def expand(sources: Sequence[FileSource]) -> tuple[list[Wanted], list[PatternResult]]:
    """Resolve configured paths, globs and directories into files, each once (no listing cache)."""
    return Finder().expand(sources)


class FileScanner:
    """Scan files, re-parsing only those whose identity (device, inode, size, mtime) changed."""

    def __init__(self, *, clock: Callable[[], float], max_size: int, reader: Reader = read_capped) -> None:
        self._clock = clock
        self._max_size = max_size
        self._reader = reader
        self._cache: dict[str, FileResult] = {}
        self._facts = certs.FactsCache()

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
            data, info = self._reader(item.path, self._max_size)
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

    def _parse(self, item: Wanted, data: bytes, identity: FileIdentity, previous: FileResult | None) -> FileResult:
        password, password_error = _password(item)
        if password_error is not None:
            parsed = Parsed(error=FileReason.PASSWORD_UNAVAILABLE, detail=password_error)
        else:
            try:
                parsed = certs.parse(data, fmt=item.fmt, password=password, name=item.path, cache=self._facts)
            except Exception as exc:  # noqa: BLE001  (hostile bytes meet a third-party parser: report, don't die)
                _log.warning("parser raised on hostile input", extra={"path": item.path, "error": type(exc).__name__})
                parsed = Parsed(error=FileReason.PARSE_ERROR, detail=f"unparseable ({type(exc).__name__})")
        digest = hashlib.sha256(data).hexdigest()
        if previous is None or previous.content_sha256 is None:
            # First sight: the mtime, but never later than now. A future mtime (clock skew, NFS) would otherwise
            # read as "changed after the workers started" forever and let a reload repeat.
            changed_at: float | None = min(identity.mtime_ns / 1e9, self._clock())
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
