"""What the watcher remembers of a target between scans."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from gunicorn_cert_exporter.model import AddressDrift, MasterReason, MasterState, TargetState
from gunicorn_cert_exporter.vocabulary import Action, Rule


@dataclass
class Memory:
    """What the watcher remembers of a target between scans.

    ``acting`` is held from the decision through the history record, the reload and its confirmation: a run that
    finds it taken (the previous interval's, or an older config's watcher, which shares this memory) only observes.
    """

    drift: tuple[AddressDrift, ...] = ()
    signals: list[float] = field(default_factory=list)
    signals_total: int = 0
    failures_total: int = 0
    last_reload: float | None = None
    history_problem: str = ""
    master: MasterState | None = None  # the last look, and when: control-socket workers' start times build on it
    master_at: float | None = None
    # The last decision logged: blocked/waiting lines repeat only on change.
    logged: tuple[Action, Rule, MasterReason | None] | None = None
    acting: threading.Lock = field(default_factory=threading.Lock)
    reloading: TargetState | None = None  # the state a reload being sent and confirmed was decided on
