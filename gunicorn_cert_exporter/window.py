"""When a reload may happen: an off-peak window in local wall-clock time, DST-correct (pure).

A window opens at ``start`` on each of its days and closes at ``end``, the same day or, when ``end`` is not after
``start``, the next day (``22:00-02:00``). Times are the zone's wall clock: across a DST change the window keeps its
local hours, so it is an hour shorter or longer in UTC that night. A wall time that falls in the spring-forward gap
opens at the same instant as the hour before it would (Python's fold=0 rule), and one that occurs twice in autumn
opens at its first occurrence.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Window:
    """Days (of the week the window opens on), wall-clock start and end, and the zone they are read in."""

    start: dt.time
    end: dt.time
    zone: ZoneInfo
    days: frozenset[int] = frozenset(range(7))  # Monday is 0

    @classmethod
    def parse(cls, *, between: str, timezone: str, days: list[str] | None = None) -> Window:
        """Build a window from its config words; ValueError with a reason for anything else."""
        start_text, sep, end_text = between.partition("-")
        if not sep:
            raise ValueError(f"between {between!r} is not HH:MM-HH:MM")
        try:
            start, end = dt.time.fromisoformat(start_text.strip()), dt.time.fromisoformat(end_text.strip())
        except ValueError:
            raise ValueError(f"between {between!r} is not HH:MM-HH:MM") from None
        try:
            zone = ZoneInfo(timezone)
        except (ValueError, OSError, KeyError):
            raise ValueError(f"{timezone!r} is not an IANA time zone (e.g. Europe/Berlin, UTC)") from None
        wanted = days if days is not None else list(DAYS)
        unknown = [day for day in wanted if day not in DAYS]
        if unknown or not wanted:
            raise ValueError(f"days are some of {', '.join(DAYS)}; got {wanted}")
        return cls(start=start, end=end, zone=zone, days=frozenset(DAYS.index(day) for day in wanted))

    def openings(self, around: float) -> list[tuple[float, float]]:
        """Return (opens, closes) as Unix times for every opening from a day before ``around`` to 8 days after."""
        today = dt.datetime.fromtimestamp(around, self.zone).date()
        out = []
        for offset in range(-1, 9):
            day = today + dt.timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            closes_on = day if self.end > self.start else day + dt.timedelta(days=1)
            opens = dt.datetime.combine(day, self.start, self.zone).timestamp()
            closes = dt.datetime.combine(closes_on, self.end, self.zone).timestamp()
            out.append((opens, closes))
        return out

    def is_open(self, now: float) -> bool:
        """Tell whether ``now`` is inside an opening."""
        return any(opens <= now < closes for opens, closes in self.openings(now))

    def next_opening(self, now: float) -> float:
        """Return when the window is next open: ``now`` while it is open, else the next opening's start."""
        if self.is_open(now):
            return now
        return min(opens for opens, _ in self.openings(now) if opens > now)
