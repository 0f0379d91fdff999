"""Reload history per target: every attempt's time, kept on disk so cooldown and max_per_hour survive restarts."""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from hashlib import sha256
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from gunicorn_cert_exporter.atomic import write_atomically
from gunicorn_cert_exporter.boundary import CENTURY, Timestamp, brief
from gunicorn_cert_exporter.runbook import PreviousLeaf
from gunicorn_cert_exporter.safe_read import read_regular

_STATE_CAP = 64 * 1024  # a target keeps at most an hour of attempts; a bigger file is not ours
_KEEP_SECONDS = 24 * 3600.0
KEEP_PREVIOUS = 5  # leaves replaced by confirmed reloads, newest kept
_log = logging.getLogger("gunicorn_cert_exporter.reload")


class _Previous(BaseModel):
    """The leaf served before a confirmed reload (runbook.PreviousLeaf)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    fingerprint_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    not_after: Timestamp
    replaced_at: Timestamp


class _StateFile(BaseModel):
    """A target's state file as ``History.record`` writes it; ``context`` gives the target and now."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    version: Literal[1]
    target: str
    attempts: tuple[Timestamp, ...] = Field(max_length=_STATE_CAP // 2)
    previous: tuple[_Previous, ...] = Field(default=(), max_length=KEEP_PREVIOUS)  # absent in older files

    @field_validator("target")
    @classmethod
    def _ours(cls, value: str, info: ValidationInfo) -> str:
        if value != (info.context or {}).get("target", value):
            raise ValueError("written for another target")
        return value

    @field_validator("attempts")
    @classmethod
    def _near_now(cls, value: tuple[float, ...], info: ValidationInfo) -> tuple[float, ...]:
        now = (info.context or {}).get("now")
        if now is not None and any(abs(t - now) > CENTURY for t in value):
            raise ValueError("an attempt is not within 100 years of now")
        return value


@dataclass(frozen=True, slots=True)
class Loaded:
    """A target's attempts as read at start, or why they could not be read (then a conservative stand-in)."""

    attempts: tuple[float, ...]
    problem: str | None = None
    previous: tuple[PreviousLeaf, ...] = ()


class History:
    """Hold every reload attempt per target; write each one through to ``directory`` when one is given.

    Without a directory the history lives in memory and is lost when the exporter stops.
    """

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self._lock = threading.Lock()  # targets are scanned concurrently; each writes its own file

    @property
    def persistent(self) -> bool:
        """Tell whether attempts survive a restart."""
        return self.directory is not None

    def path(self, target: str) -> str:
        """Return the state file of a target (names are restricted by the config, hashed to be sure)."""
        assert self.directory is not None  # noqa: S101  (callers check persistent)
        digest = sha256(target.encode()).hexdigest()[:12]
        return os.path.join(self.directory, f"reload-{target}-{digest}.json")

    def load(self, target: str, *, now: float) -> Loaded:
        """Read a target's attempts; a corrupt or unreadable file counts as an attempt made now (conservative)."""
        if self.directory is None:
            return Loaded(())
        path = self.path(target)
        try:
            raw = read_regular(path, _STATE_CAP)
            state = _StateFile.model_validate_json(raw, context={"target": target, "now": now})
        except FileNotFoundError:
            return Loaded(())
        except (OSError, ValidationError) as exc:
            why = brief(exc) if isinstance(exc, ValidationError) else exc.strerror or type(exc).__name__
            problem = f"{path}: {why}; no reload before a cooldown has passed"
            _log.warning("reload history unreadable", extra={"target": target, "problem": problem})
            return Loaded((now,), problem)
        # An attempt "in the future" (the clock was ahead when it was written) counts as made now: it must not
        # block reloads until that date, nor be forgotten.
        previous = tuple(PreviousLeaf(p.fingerprint_sha256, p.not_after, p.replaced_at) for p in state.previous)
        return Loaded(tuple(min(t, now) for t in state.attempts), previous=previous)

    def record(self, target: str, attempts: tuple[float, ...], previous: tuple[PreviousLeaf, ...] = ()) -> str | None:
        """Write a target's attempts and previous leaves atomically (temp file, fsync, rename); return any problem."""
        if self.directory is None:
            return None
        keep = [t for t in attempts if max(attempts) - t < _KEEP_SECONDS]
        leaves = [asdict(leaf) for leaf in previous[-KEEP_PREVIOUS:]]
        body = json.dumps({"version": 1, "target": target, "attempts": keep, "previous": leaves}).encode()
        path = self.path(target)
        try:
            with self._lock:
                write_atomically(self.directory, path, body, prefix=".reload-")
        except OSError as exc:
            return f"{path}: {exc.strerror or exc}"
        return None
