"""What every series writer shares: where samples go (``Sink``) and how outside values become label values."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


def label(value: object) -> str:
    """Make any value a valid UTF-8 label value (file names may hold undecodable bytes)."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def number(value: float) -> float:
    """Return ``value`` as a sample value; NaN for an integer no float can hold (a pid that is no pid)."""
    try:
        return float(value)
    except OverflowError:
        return float("nan")


class Sink(Protocol):
    """Where series are added: metric families, or sample lines being rendered."""

    def add(self, name: str, labels: Sequence[str], value: float) -> None:
        """Add one sample to the named family of the catalogue."""
