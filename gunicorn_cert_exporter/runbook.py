"""The rotation runbook's facts about a target: who its workers are, what they can read, the leaf before a reload.

Frozen values only (the ``access``, ``previous_leaves`` and ``failure_reasons`` of a TargetState); the kernel's
access check is ``sources/access.py``, the identity ``sources/worker_identity.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a process runs as: what the kernel checks file permissions against."""

    uid: int
    gid: int
    groups: frozenset[int] = frozenset()

    @property
    def all_groups(self) -> frozenset[int]:
        return self.groups | {self.gid}


class Access(str, Enum):
    """The answer for one file."""

    READABLE = "readable"
    DENIED = "denied"  # the workers can't read it: the reason names the path that stops them
    UNKNOWN = "unknown"  # the exporter can't tell (it can't see the path itself, or an ACL it can't evaluate)


AccessFile = Literal["cert", "key", "ca_certs"]
"""A file the workers load (the ``file`` label of ``gunicorn_cert_worker_can_read``)."""

FailureReason = Literal["signal_failed", "not_served", "workers_missing", "unhealthy"]
"""Why a reload was not confirmed (the ``reason`` label of ``gunicorn_cert_reload_failures_by_reason_total``)."""

FAILURE_REASONS: tuple[FailureReason, ...] = ("signal_failed", "not_served", "workers_missing", "unhealthy")


@dataclass(frozen=True, slots=True)
class FileAccess:
    """Whether the workers can read one of the files they load, and if not, which path stops them."""

    file: AccessFile
    path: str
    access: Access
    detail: str = ""


@dataclass(frozen=True, slots=True)
class WorkerAccess:
    """Who a target's workers run as (and how that was learned) and what they can read."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    source: str  # "worker PID", "--user/--group", "--user/--initgroups", "master"
    files: tuple[FileAccess, ...] = ()
    key_exposed: bool | None = None  # None: the key's mode could not be read

    @property
    def denied(self) -> tuple[FileAccess, ...]:
        """Return the files the workers can't read."""
        return tuple(f for f in self.files if f.access is Access.DENIED)


@dataclass(frozen=True, slots=True)
class PreviousLeaf:
    """The leaf a target served before a confirmed reload replaced it: what a rollback goes back to."""

    fingerprint_sha256: str
    not_after: float
    replaced_at: float
