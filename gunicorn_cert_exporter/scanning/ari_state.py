"""What the exporter last learnt from ACME servers per certificate, kept under ``--storage.path`` across restarts.

One JSON file, written atomically (temp file, fsync, rename) and validated field by field when read: a file that
is not ours or is damaged is set aside (logged) and the exporter starts from nothing, as on a first start.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from dataclasses import asdict, dataclass, fields

from gunicorn_cert_exporter.atomic import write_atomically
from gunicorn_cert_exporter.safe_read import read_regular

FILENAME = "ari.json"
MAX_ENTRIES = 50_000
_STATE_CAP = 32 * 1024 * 1024
_log = logging.getLogger("gunicorn_cert_exporter.ari")


@dataclass(frozen=True, slots=True)
class Entry:
    """One certificate at one ACME server: its last window, and when it may be asked again."""

    directory: str
    cert_id: str
    checked_at: float  # when it was last asked (or refused to be)
    next_at: float  # not asked before this: the interval, or the server's Retry-After if later
    start: float | None = None  # the last window known (kept when a later request fails)
    end: float | None = None
    latest_end: float | None = None  # the latest end seen: a window moving earlier than it is news
    explanation_url: str = ""
    error: str = ""
    detail: str = ""

    @property
    def key(self) -> str:
        """Return what identifies the certificate at its server."""
        return key_of(self.directory, self.cert_id)


def key_of(directory: str, cert_id: str) -> str:
    """Return the key of a certificate at an ACME directory."""
    return f"{directory} {cert_id}"


_NUMBERS = {"checked_at", "next_at"}
_OPTIONAL_NUMBERS = {"start", "end", "latest_end"}
_TEXTS = {"directory", "cert_id", "explanation_url", "error", "detail"}


def _entry(raw: object) -> Entry:
    if not isinstance(raw, dict) or set(raw) != {f.name for f in fields(Entry)}:
        raise ValueError("unexpected fields")
    for name in _NUMBERS | _OPTIONAL_NUMBERS:
        value = raw[name]
        if value is None and name in _OPTIONAL_NUMBERS:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{name} is not a time")
    if not all(isinstance(raw[name], str) and len(raw[name]) <= 4096 for name in _TEXTS):
        raise ValueError("a text field is not a short string")
    return Entry(**raw)


class Memory:
    """Read and write the entries; without a directory they live in memory only."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self._lock = threading.Lock()

    def load(self) -> dict[str, Entry]:
        """Read the entries written last; nothing when there are none or they can't be trusted."""
        if self.directory is None:
            return {}
        path = os.path.join(self.directory, FILENAME)
        try:
            raw = json.loads(read_regular(path, _STATE_CAP))
            if not isinstance(raw, dict) or raw.get("version") != 1 or not isinstance(raw.get("entries"), list):
                raise ValueError("not an ARI state file")  # noqa: TRY301  (one handler for every corruption)
            entries = [_entry(item) for item in raw["entries"][:MAX_ENTRIES]]
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, RecursionError) as exc:
            _log.warning("ARI state unreadable; starting afresh", extra={"path": path, "problem": str(exc)[:200]})
            return {}
        return {entry.key: entry for entry in entries}

    def save(self, entries: dict[str, Entry]) -> str | None:
        """Write every entry atomically; return the problem if that failed."""
        if self.directory is None:
            return None
        kept = sorted(entries.values(), key=lambda e: e.checked_at, reverse=True)[:MAX_ENTRIES]
        body = json.dumps({"version": 1, "entries": [asdict(e) for e in kept]}).encode()
        path = os.path.join(self.directory, FILENAME)
        try:
            with self._lock:
                write_atomically(self.directory, path, body, prefix=".ari-")
        except OSError as exc:
            _log.warning("ARI state not written", extra={"path": path, "problem": exc.strerror or str(exc)})
            return f"{path}: {exc.strerror or exc}"
        return None
