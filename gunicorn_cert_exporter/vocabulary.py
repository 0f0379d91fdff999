"""The closed sets of words every stage shares: scan kinds, reload actions and rules, master channels.

Each is an enum (a ``str``, so it compares and serialises as its value) or a ``Literal``; metrics, logs, the page
and the API show the value, byte for byte.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal


class Word(str, Enum):
    """A closed set of words: compares equal to its value, and formats as it (``f"{w}"``) on every Python."""

    def __str__(self) -> str:
        return str(self.value)


class ScanKind(Word):
    """A part of the snapshot and of ``/metrics``: one per scan, plus the exporter's own (the ``kind`` label)."""

    FILES = "files"
    ENDPOINTS = "endpoints"
    GUNICORN = "gunicorn"
    ARI = "ari"  # what ACME servers said: published by the renewal pool, never scanned by the scheduler
    EXPORTER = "exporter"  # the exporter's own series (scan timings, config reloads): rendered, never scanned


SCANNED: tuple[ScanKind, ...] = (ScanKind.FILES, ScanKind.ENDPOINTS, ScanKind.GUNICORN)
"""The kinds a scan publishes, in the order they first run."""


class Action(Word):
    """What the reload policy does about a target this scan (``ERROR``: its scan failed, nothing was decided)."""

    NONE = "none"
    WAIT = "wait"
    BLOCKED = "blocked"
    SIGNAL = "signal"
    DRY_RUN = "dry_run"
    ERROR = "error"


class Rule(Word):
    """The rule of the reload policy that made a decision (stable names, for the audit log)."""

    NO_DRIFT = "no_drift"
    DISABLED = "disabled"
    AFTER = "after"
    CERT_FILE = "cert_file"
    KEY_FILE = "key_file"
    KEY_MATCH = "key_match"
    VALIDITY = "validity"
    MASTER = "master"
    USR2 = "usr2"
    WORKERS_RESTARTED = "workers_restarted"
    COOLDOWN = "cooldown"
    MAX_PER_HOUR = "max_per_hour"
    DRY_RUN = "dry_run"
    ALLOWED = "allowed"


Channel = Literal["pidfile", "pid", "control_socket"]
"""What proves and reloads a target's master (the ``channel`` label of ``gunicorn_cert_master_info``)."""
