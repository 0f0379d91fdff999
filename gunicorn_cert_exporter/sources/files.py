"""Paths, globs and directories to FileResults: stat, read under a size cap, parse, skip what is unchanged."""

from __future__ import annotations

import errno
import glob
import hashlib
import logging
import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import islice, zip_longest

from gunicorn_cert_exporter.config import FileSource
from gunicorn_cert_exporter.model import (
    FileIdentity,
    FileReason,
    FileResult,
    Parsed,
    PatternProblem,
    PatternReason,
    PatternResult,
)
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


_Listing = tuple[tuple[str, bool, bool], ...]
"""A directory's entries: name, whether it is a directory (symlinks followed), whether it is a symlink."""
_BATCH = 64  # matches taken from one pattern before the next pattern's turn


@dataclass(frozen=True, slots=True)
class _Pattern:
    """One configured pattern being expanded: its source, how specific it is, and its walk."""

    source: FileSource
    text: str
    specificity: tuple[int, int, int]
    walk: Iterator[str]
    problems: _Problems
    found: list[str]


class _Problems:
    """A pattern's problems, one per reason: the first detail is kept and the others counted (memory stays flat)."""

    def __init__(self) -> None:
        self._first: dict[PatternReason, str] = {}
        self._count: dict[PatternReason, int] = {}

    def add(self, reason: PatternReason, detail: str) -> None:
        self._first.setdefault(reason, detail)
        self._count[reason] = self._count.get(reason, 0) + 1

    def __bool__(self) -> bool:
        return bool(self._first)

    def result(self) -> tuple[PatternProblem, ...]:
        return tuple(
            PatternProblem(
                reason, detail + (f" (and {self._count[reason] - 1} more)" if self._count[reason] > 1 else "")
            )
            for reason, detail in self._first.items()
        )


class Finder:
    """Expand paths, globs and directories into files, bounded in count, depth and time.

    A directory's listing is kept with its inode and mtime: entries added, removed or renamed (a Kubernetes
    ``..data`` swap included) change the mtime, so an unchanged tree costs one stat per directory. The walk is
    iterative (no recursion limit), patterns take turns (a huge tree can't starve a small source), and past a
    bound a pattern keeps its first matches and reports why on its PatternResult.
    """

    def __init__(
        self, *, max_files: int = 100_000, max_depth: int = 32, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_files = max_files
        self._max_depth = max_depth
        self._clock = clock
        self._cache_budget = 2 * max_files + 10_000  # directory entries kept between scans: memory stays bounded
        self._listings: dict[str, tuple[tuple[int, int], _Listing]] = {}
        self._seen: dict[str, tuple[tuple[int, int], _Listing]] = {}
        self._cached = 0
        self._deadline: float | None = None

    def expand(
        self, sources: Sequence[FileSource], *, deadline: float | None = None
    ) -> tuple[list[Wanted], list[PatternResult]]:
        """Resolve configured paths, globs and directories into files, each once, by ``deadline`` (monotonic)."""
        self._seen, self._cached, self._deadline = {}, 0, deadline
        patterns: list[_Pattern] = []
        for source in sources:
            for text in source.paths:
                problems = _Problems()
                walk = self._matches(text, problems)
                patterns.append(_Pattern(source, text, _specificity(text), walk, problems, []))
        excludes = {id(s): [_glob_regex(p) for p in s.exclude] for s in sources}
        taken, active = 0, list(patterns)
        while active:
            for pattern in list(active):
                if self._late():
                    pattern.problems.add(PatternReason.SCAN_DEADLINE, "the walk ran out of time")
                    active.remove(pattern)
                    continue
                want = min(_BATCH, self._max_files - taken)
                batch = list(islice(pattern.walk, want))
                kept = [path for path in batch if not _excluded(path, excludes[id(pattern.source)])]
                pattern.found.extend(kept)
                taken += len(kept)
                if len(batch) < want:  # the walk ended (or gave up at the deadline)
                    active.remove(pattern)
                    if self._late():
                        pattern.problems.add(PatternReason.SCAN_DEADLINE, "the walk ran out of time")
                elif taken >= self._max_files:
                    for left in active:
                        left.problems.add(PatternReason.MAX_FILES, f"{self._max_files} files in all")
                    active = []
                    break
        self._listings = self._seen  # directories that left every pattern are forgotten
        return self._wanted(patterns), [_result(p) for p in patterns]

    def _wanted(self, patterns: list[_Pattern]) -> list[Wanted]:
        """Take the patterns' matches in turns; a file matched twice takes the most specific source's options."""
        best: dict[str, tuple[tuple[int, int, int], FileSource]] = {}
        order: list[str] = []
        for pattern in patterns:
            pattern.found.sort()
        for row in zip_longest(*(p.found for p in patterns)):
            for pattern, path in zip(patterns, row, strict=True):
                if path is None:
                    continue
                known = best.get(path)
                if known is None:
                    order.append(path)
                if known is None or pattern.specificity > known[0]:  # ties: the source listed first
                    best[path] = (pattern.specificity, pattern.source)
        return [_wanted_for(path, best[path][1]) for path in order]

    def _late(self) -> bool:
        return self._deadline is not None and self._clock() > self._deadline

    def _matches(self, pattern: str, problems: _Problems) -> Iterator[str]:
        if not glob.has_magic(pattern):
            listing = self._list(pattern, problems)
            if listing is None:
                yield pattern  # a file, or missing: scan_one says which
                return
            # A directory: its files (Kubernetes Secret volumes hold ..data and ..<timestamp> beside them).
            yield from (os.path.join(pattern, name) for name, is_dir, _ in listing if not is_dir)
            return
        parts = pattern.split("/")
        static = next(i for i, part in enumerate(parts) if glob.has_magic(part))
        base = "/".join(parts[:static]) or ("/" if pattern.startswith("/") else ".")
        rest = parts[static:]
        depth = None if any("**" in part for part in rest) else len(rest)
        regex = _glob_regex(pattern if base != "." or pattern.startswith("./") else "./" + pattern)
        strip = 2 if base == "." and not pattern.startswith("./") else 0
        yield from (path[strip:] for path in self._walk(base, regex, depth, problems))

    def _walk(self, base: str, regex: re.Pattern[str], depth: int | None, problems: _Problems) -> Iterator[str]:
        """Walk depth-first without recursion, at most ``max_depth`` levels under ``**``.

        ``**`` does not enter symlinked directories (as find and Python 3.13's pathlib): /proc/*/root and cwd lead
        back to the whole filesystem. A fixed-depth glob follows them, a symlink back up the tree only once.
        """
        stack: list[tuple[str, int, frozenset[str]]] = [(base, 0, frozenset())]
        while stack:
            if self._late():
                return  # expand() reports the deadline on the pattern
            directory, level, ancestors = stack.pop()
            listing = self._list(directory, problems)
            real = os.path.realpath(directory) if depth is not None else directory
            if listing is None or real in ancestors:
                continue
            ancestors = ancestors | {real} if depth is not None else ancestors
            below: list[tuple[str, int, frozenset[str]]] = []
            for name, is_dir, is_link in listing:
                path = directory.rstrip("/") + "/" + name
                if not is_dir:
                    if (depth is None or depth == level + 1) and regex.match(path):
                        yield path
                elif depth is not None:
                    if level + 1 < depth:
                        below.append((path, level + 1, ancestors))
                elif is_link:
                    continue
                elif level + 1 <= self._max_depth:
                    below.append((path, level + 1, ancestors))
                else:
                    detail = f"not entered below {self._max_depth} levels: {_printable(path)}"
                    problems.add(PatternReason.MAX_DEPTH, detail)
            stack.extend(reversed(below))

    def _list(self, directory: str, problems: _Problems | None) -> _Listing | None:
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
                    listing = tuple(
                        sorted((e.name, _is_dir(e), e.is_symlink()) for e in entries if not e.name.startswith("."))
                    )
            except OSError as exc:
                if problems is not None:
                    reason = PatternReason.PERMISSION_DENIED if isinstance(exc, PermissionError) else None
                    detail = f"{_printable(directory)}: {exc.strerror or type(exc).__name__}"
                    problems.add(reason or PatternReason.READ_ERROR, detail)
                return None
            cached = (stamp, listing)
        if self._cached + len(cached[1]) <= self._cache_budget:
            self._seen[directory] = cached
            self._cached += len(cached[1])
        return cached[1]


def _specificity(pattern: str) -> tuple[int, int, int]:
    """Rank a pattern: a literal path beats a glob, then more fixed leading components, then a longer pattern."""
    parts = pattern.split("/")
    fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    return (0 if glob.has_magic(pattern) else 1, fixed, len(pattern))


def _wanted_for(path: str, source: FileSource) -> Wanted:
    return Wanted(path, source.format, source.password_file, source.password_env)


def _result(pattern: _Pattern) -> PatternResult:
    if not pattern.found and not pattern.problems:
        pattern.problems.add(PatternReason.NO_MATCH, "matched no file")
    return PatternResult(pattern=pattern.text, matches=len(pattern.found), problems=pattern.problems.result())


def _printable(path: str) -> str:
    """Show a path with control characters escaped (a detail text may reach a terminal or a log)."""
    return path.encode("unicode_escape", "backslashreplace").decode("ascii") if not path.isprintable() else path


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

    def scan(
        self,
        wanted: Iterable[Wanted],
        *,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        progress: list[FileResult] | None = None,
    ) -> tuple[FileResult, ...]:
        """Scan each file; one broken file never stops the others, and past ``deadline`` the rest are marked.

        ``progress``, if given, receives each result as it is made: what a scan stuck in one read has so far.
        """
        previous, self._cache = self._cache, {}
        results = [] if progress is None else progress
        for item in wanted:
            before = previous.get(item.path)
            if deadline is not None and clock() > deadline:
                result = overdue(item.path, before)
            else:
                result = self.scan_one(item, before)
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
        if info.st_size == 0:
            # Not read: /proc and /sys pseudo-files say 0 bytes and would give up to max_file_size of noise each.
            return FileResult(path=item.path, error=FileReason.EMPTY, detail="0 bytes", identity=identity)
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
    return re.compile("".join(out) + r"\Z", re.DOTALL)  # `**` and `*` match names with a newline too


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
            data, info = read_capped(item.password_file, 4096)  # never blocks, even on a FIFO
        except OSError as exc:
            return None, f"password file {item.password_file}: {exc.strerror or type(exc).__name__}"
        if not stat.S_ISREG(info.st_mode):
            return None, f"password file {item.password_file}: {_file_kind(info.st_mode)}, not a regular file"
        first = data.split(b"\n", 1)[0]
        return first.removesuffix(b"\r"), None  # the first line, as the docs say; CRLF files too
    return None, None


def overdue(path: str, previous: FileResult | None) -> FileResult:
    """Mark a file the scan had no time for; what was known of it stays, so its series don't disappear."""
    detail = "the scan reached its deadline before this file"
    if previous is None:
        return FileResult(path=path, error=FileReason.SCAN_DEADLINE, detail=detail)
    # No identity: the next scan reads the file again instead of trusting this result as unchanged.
    return replace(previous, error=FileReason.SCAN_DEADLINE, detail=detail, identity=None)


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
