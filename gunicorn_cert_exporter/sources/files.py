"""Files to FileResults: stat, read under a size cap, parse, skip what is unchanged (globs.py finds them)."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from gunicorn_cert_exporter.model import (
    CertFacts,
    FileIdentity,
    FileReason,
    FileResult,
    Parsed,
)
from gunicorn_cert_exporter.safe_read import read_capped
from gunicorn_cert_exporter.sources import certs, crl, formats

_PASSWORD_REASONS = frozenset({FileReason.PASSWORD_REQUIRED, FileReason.BAD_PASSWORD, FileReason.PASSWORD_UNAVAILABLE})
_log = logging.getLogger("gunicorn_cert_exporter.files")


Reader = Callable[[str, int], tuple[bytes, os.stat_result]]
"""Read at most ``max_size + 1`` bytes of a path, with the fstat of what was opened."""


@dataclass(frozen=True, slots=True)
class Wanted:
    """One file to scan, with how to parse it."""

    path: str
    fmt: formats.Format = "auto"
    password_file: str | None = None
    password_env: str | None = None
    trust_store: bool = False
    ca_file: str | None = None  # where the issuer of a CRL in this file may be, besides its own directory


class FileScanner:
    """Scan files, re-parsing only those whose identity (device, inode, size, mtime) changed."""

    def __init__(self, *, clock: Callable[[], float], max_size: int, reader: Reader = read_capped) -> None:
        self._clock = clock
        self._max_size = max_size
        self._reader = reader
        self._cache: dict[str, FileResult] = {}
        self._previous: dict[str, FileResult] = {}
        self._facts = certs.FactsCache()

    def successor(self) -> FileScanner:
        """Return a scanner for the next run that knows what this one knew and found so far.

        For a run abandoned at its deadline (its thread may still be reading): the next run starts from every
        result already made instead of cold, so a tree too big to scan within one deadline still converges.
        """
        following = FileScanner(clock=self._clock, max_size=self._max_size, reader=self._reader)
        following._previous = {**self._previous, **self._cache}
        following._cache = dict(following._previous)
        following._facts = self._facts  # thread-safe, and facts are a pure function of the DER
        return following

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
        self._previous = previous
        results = [] if progress is None else progress
        for item in wanted:
            before = previous.get(item.path)
            if deadline is not None and clock() > deadline:
                result = overdue(item.path, before)
                if before is not None:
                    # The next scan compares against what was last read, not this mark: a file unchanged since
                    # is not read again (re-reading every overdue file would overrun the next deadline too).
                    self._cache[item.path] = before
            else:
                result = self._cache[item.path] = self.scan_one(item, before)
            if result.trust_store is not item.trust_store:  # the entry says so, whatever the file held before
                result = replace(result, trust_store=item.trust_store)
            results.append(result)
        if any(r.crls for r in results):
            results[:] = self._verify_crls(results, {w.path: w.ca_file for w in wanted if w.ca_file})
        return tuple(results)

    def _verify_crls(self, results: list[FileResult], ca_files: dict[str, str]) -> list[FileResult]:
        """Mark each CRL verified by an issuer certificate in its own directory or its entry's ``ca_file``."""
        by_dir: dict[str, list[CertFacts]] = {}
        for result in results:
            by_dir.setdefault(os.path.dirname(result.path), []).extend(result.certs)
        out = []
        for result in results:
            if not result.crls:
                out.append(result)
                continue
            issuers = list(by_dir[os.path.dirname(result.path)])
            ca_file = ca_files.get(result.path)
            if ca_file:
                issuers.extend(self.scan_one(Wanted(ca_file), self._cache.get(ca_file)).certs)
            out.append(replace(result, crls=tuple(crl.verify(c, issuers) for c in result.crls)))
        return out

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
        if (
            previous is not None
            and previous.identity == identity
            and previous.error not in _PASSWORD_REASONS
            and not previous.followed  # a kubeconfig's referenced files (kubelet's rotating client cert) may change
        ):
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
        # A copy that keeps the mtime (cp -p, rsync -a, tar) changes the inode's ctime: the later of the two.
        changed = max(info.st_mtime, info.st_ctime)
        return self._parse(item, data, _identity(info), previous, changed=changed)

    def _refuse(self, path: str, info: os.stat_result, previous: FileResult | None) -> FileResult | None:
        if not stat.S_ISREG(info.st_mode):
            kind = _file_kind(info.st_mode)
            return _failed(path, FileReason.NOT_REGULAR_FILE, f"{kind}, not a regular file", previous)
        if info.st_size > self._max_size:
            detail = f"{info.st_size} bytes is over the {self._max_size} byte cap"
            return _failed(path, FileReason.TOO_LARGE, detail, previous)
        return None

    def _parse(
        self, item: Wanted, data: bytes, identity: FileIdentity, previous: FileResult | None, *, changed: float
    ) -> FileResult:
        password, password_error = _password(item)
        if password_error is not None:
            parsed = Parsed(error=FileReason.PASSWORD_UNAVAILABLE, detail=password_error)
        else:
            try:
                parsed = formats.parse(
                    data, fmt=item.fmt, password=password, name=item.path, cache=self._facts, read=self._reference
                )
            except Exception as exc:  # noqa: BLE001  (hostile bytes meet a third-party parser: report, don't die)
                _log.warning(
                    "parser raised on hostile input",
                    extra={"path": item.path, "error": type(exc).__name__},
                    exc_info=True,  # the traceback says where in the parser: the bug report's first line
                )
                parsed = Parsed(error=FileReason.PARSE_ERROR, detail=f"unparseable ({type(exc).__name__})")
        content = hashlib.sha256(data)
        for cert in parsed.certs if parsed.followed else ():  # what the referenced files hold is content too
            content.update(cert.fingerprint_sha256.encode())
        digest = content.hexdigest()
        if previous is None or previous.content_sha256 is None:
            # First sight: the later of mtime and ctime, but never later than now. A future time (clock skew, NFS)
            # would otherwise read as "changed after the workers started" forever and let a reload repeat.
            changed_at: float | None = min(changed, self._clock())
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
            entries=parsed.entries,
            entry_errors=parsed.entry_errors,
            crls=parsed.crls,
            secret_keys=parsed.secret_keys,
            followed=parsed.followed,
        )

    def _reference(self, path: str) -> bytes | tuple[FileReason, str]:
        """Read a file a kubeconfig names, under the same bounds as any file: regular, capped, never blocking."""
        try:
            data, info = self._reader(path, self._max_size)
        except OSError as exc:
            return _os_reason(exc), exc.strerror or type(exc).__name__
        refused = self._refuse(path, info, None)
        if refused is not None:
            return refused.error or FileReason.READ_ERROR, refused.detail
        if len(data) > self._max_size:
            return FileReason.TOO_LARGE, "over the size cap"
        return data


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
    """Mark a file the scan had no time for; what was known of it stays, so its series don't disappear.

    The mark is for publishing only: it has no identity, so it never passes for an unchanged file.
    """
    detail = "the scan reached its deadline before this file"
    if previous is None:
        return FileResult(path=path, error=FileReason.SCAN_DEADLINE, detail=detail)
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
