"""The rotation runbook in the status view: what the workers can read, the key's exposure, window, previous leaf.

Pure; ``status.py`` adds these problems and this row to each target (the page, the API and ``check`` read them).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from gunicorn_cert_exporter.bands import Severity
from gunicorn_cert_exporter.model import TargetState
from gunicorn_cert_exporter.runbook import Access, PreviousLeaf


@dataclass(frozen=True, slots=True)
class AccessRow:
    """Whether the workers can read one file they load: ``readable``, ``denied`` or ``unknown``, and why."""

    file: str
    path: str
    access: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RunbookRow:
    """Who the workers run as, what they can read, the key's exposure, the next window, the leaves replaced."""

    uid: int | None = None  # None: no proven master, or its workers can't be seen
    gid: int | None = None
    groups: tuple[int, ...] = ()
    identity_source: str = ""
    access: tuple[AccessRow, ...] = ()
    key_exposed: bool | None = None
    next_window: float | None = None
    previous_leaves: tuple[PreviousLeaf, ...] = ()  # oldest first
    failures_by_reason: tuple[tuple[str, int], ...] = ()

    @property
    def workers_as(self) -> str:
        """Say who the workers are, e.g. ``uid 65534 gid 65534 (worker 123)``."""
        if self.uid is None:
            return "workers' identity unknown"
        return f"uid {self.uid} gid {self.gid} ({self.identity_source})"


def runbook_row(target: TargetState) -> RunbookRow:
    """Return the runbook facts of a target, as the page and the API show them."""
    row = RunbookRow(
        next_window=target.next_window,
        previous_leaves=target.previous_leaves,
        failures_by_reason=target.failure_reasons,
    )
    access = target.access
    if access is None:
        return row
    return replace(
        row,
        uid=access.uid,
        gid=access.gid,
        groups=access.groups,
        identity_source=access.source,
        access=tuple(AccessRow(f.file, f.path, f.access.value, f.detail) for f in access.files),
        key_exposed=access.key_exposed,
    )


def runbook_text(row: RunbookRow) -> str:
    """Say the runbook facts in one line for the page: workers, the files they can't read, window, previous leaf."""
    parts = [f"workers {row.workers_as}"]
    parts += [f"{a.file}: {a.access}" for a in row.access]
    if row.key_exposed:
        parts.append("key exposed")
    if row.previous_leaves:
        leaf = row.previous_leaves[-1]
        parts.append(f"previous leaf {leaf.fingerprint_sha256[:16]}… (not after {_utc(leaf.not_after)})")
    if row.next_window is not None:
        parts.append(f"next window {_utc(row.next_window)}")
    return " · ".join(parts)


def _utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def runbook_problems(target: TargetState) -> list[tuple[Severity, str]]:
    """Return the runbook's findings: files the workers can't read (CRITICAL), can't tell, an exposed key."""
    access = target.access
    if access is None:
        return []
    out = []
    for entry in access.files:
        name = "ca_certs" if entry.file == "ca_certs" else f"{entry.file}_file"
        if entry.access is Access.DENIED:
            who = f"uid {access.uid} gid {access.gid}"
            out.append((Severity.CRITICAL, f"workers ({who}) can't read {name} {entry.path}: {entry.detail}"))
        elif entry.access is Access.UNKNOWN:
            out.append((Severity.UNKNOWN, f"can't tell whether the workers can read {name}: {entry.detail}"))
    if access.key_exposed:
        out.append((Severity.WARNING, "key_file is readable or writable by others, or writable by its group"))
    return out
