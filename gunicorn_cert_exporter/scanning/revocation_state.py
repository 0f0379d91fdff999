"""The CRLs fetched last, kept under ``--storage.path`` so a restart does not refetch every CRL.

``revocation/crls.json`` lists each distribution point with when it was fetched, when it may be fetched again and
its last error; each CRL's DER sits beside it (``<sha256 of the URL>.crl``). All written atomically. Read back, a
CRL is checked again as when fetched (``crl_fetched.read``) and verified again with the issuers of the next pass;
a file that is not ours or is damaged is set aside (logged) and the exporter starts from nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading

from gunicorn_cert_exporter.atomic import write_atomically
from gunicorn_cert_exporter.revocation_judge import CrlFetch
from gunicorn_cert_exporter.safe_read import read_regular
from gunicorn_cert_exporter.sources import crl_fetched

DIRECTORY = "revocation"
INDEX = "crls.json"
MAX_ENTRIES = 10_000
_INDEX_CAP = 8 * 1024 * 1024
_log = logging.getLogger("gunicorn_cert_exporter.revocation")


def _name(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest() + ".crl"


def _time(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError("not a time")
    return float(value)


class CrlMemory:
    """Read and write the fetched CRLs; without a directory they live in memory only."""

    def __init__(self, storage_path: str | None, *, max_crl_size: int = 1024**3) -> None:
        self.directory = os.path.join(storage_path, DIRECTORY) if storage_path else None
        self.max_crl_size = max_crl_size
        self._lock = threading.Lock()

    def load(self) -> dict[str, CrlFetch]:
        """Return the CRLs kept last (unverified until a pass verifies them); nothing if they can't be trusted."""
        if self.directory is None:
            return {}
        path = os.path.join(self.directory, INDEX)
        try:
            raw = json.loads(read_regular(path, _INDEX_CAP))
            if not isinstance(raw, dict) or raw.get("version") != 1 or not isinstance(raw.get("entries"), list):
                raise ValueError("not a revocation state file")  # noqa: TRY301  (one handler for every corruption)
            return dict(self._entry(item) for item in raw["entries"][:MAX_ENTRIES])
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, KeyError, RecursionError) as exc:
            _log.warning(
                "revocation state unreadable; starting afresh", extra={"path": path, "problem": str(exc)[:200]}
            )
            return {}

    def _entry(self, item: object) -> tuple[str, CrlFetch]:
        if not isinstance(item, dict) or not isinstance(item.get("url"), str) or not isinstance(item.get("error"), str):
            raise ValueError("unexpected fields")  # noqa: TRY004  (a damaged state file)
        url = item["url"]
        fetched = CrlFetch(url, _time(item["checked_at"]), _time(item["next_at"]), None, item["error"][:64])
        if item.get("crl"):
            assert self.directory is not None  # noqa: S101  (load returns early without one)
            body = read_regular(os.path.join(self.directory, _name(url)), self.max_crl_size)
            read = crl_fetched.read(body, url=url)
            if isinstance(read, str):
                raise ValueError(f"kept CRL of {url}: {read}")
            fetched = CrlFetch(url, fetched.checked_at, fetched.next_at, read.facts, fetched.error, read.index)
        return url, fetched

    def save(self, crls: dict[str, CrlFetch], *, changed: CrlFetch | None = None) -> str | None:
        """Write the index, and ``changed``'s CRL if it has one; return the problem if that failed."""
        if self.directory is None:
            return None
        kept = sorted(crls.values(), key=lambda f: f.checked_at, reverse=True)[:MAX_ENTRIES]
        entries = [
            {"url": f.url, "checked_at": f.checked_at, "next_at": f.next_at, "error": f.error, "crl": f.crl is not None}
            for f in kept
        ]
        try:
            with self._lock:
                os.makedirs(self.directory, mode=0o700, exist_ok=True)
                if changed is not None and changed.crl is not None:
                    target = os.path.join(self.directory, _name(changed.url))
                    write_atomically(self.directory, target, changed.crl.der, prefix=".crl-")
                body = json.dumps({"version": 1, "entries": entries}).encode()
                write_atomically(self.directory, os.path.join(self.directory, INDEX), body, prefix=".crl-")
        except OSError as exc:
            _log.warning("revocation state not written", extra={"path": self.directory, "problem": str(exc)[:200]})
            return f"{self.directory}: {exc.strerror or exc}"
        return None
