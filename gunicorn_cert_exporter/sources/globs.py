"""Paths, globs and directories to the files they name: bounded in count, depth and time, never recursive."""

from __future__ import annotations

import glob
import os
import re
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice, zip_longest

from gunicorn_cert_exporter.config import FileSource
from gunicorn_cert_exporter.model import PatternProblem, PatternReason, PatternResult
from gunicorn_cert_exporter.sources.files import Wanted
from gunicorn_cert_exporter.text import printable

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
        if len(patterns) == 1:  # the common case: no turns to take, no source to choose
            only = patterns[0]
            return [_wanted_for(path, only.source) for path in dict.fromkeys(only.found)]
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
                    detail = f"not entered below {self._max_depth} levels: {printable(path)}"
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
                    detail = f"{printable(directory)}: {exc.strerror or type(exc).__name__}"
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
    return Wanted(path, source.format, source.password_file, source.password_env, source.trust_store, source.ca_file)


def _result(pattern: _Pattern) -> PatternResult:
    if not pattern.found and not pattern.problems and not pattern.source.optional:
        pattern.problems.add(PatternReason.NO_MATCH, "matched no file")
    return PatternResult(pattern=pattern.text, matches=len(pattern.found), problems=pattern.problems.result())


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:
        return False


def expand(sources: Sequence[FileSource]) -> tuple[list[Wanted], list[PatternResult]]:
    """Resolve configured paths, globs and directories into files, each once (no listing cache)."""
    return Finder().expand(sources)


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
    if not excludes:
        return False
    base = os.path.basename(path)
    return any(rx.match(path) or rx.match(base) for rx in excludes)
