"""The rotation runbook's reload settings: an off-peak ``window`` and a ``health`` path (validated at load)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from gunicorn_cert_exporter.window import Window


@dataclass(frozen=True, slots=True)
class Expect:
    """The status codes that count as healthy, inclusive (``200-399``)."""

    low: int = 200
    high: int = 399

    @classmethod
    def parse(cls, text: str) -> Expect:
        """Read ``200-399`` or ``204``; ValueError with a reason for anything else."""
        low, sep, high = text.partition("-")
        try:
            bounds = (int(low), int(high) if sep else int(low))
        except ValueError:
            raise ValueError(f"expect {text!r} is a status code or a range such as 200-399") from None
        if not 100 <= bounds[0] <= bounds[1] <= 599:
            raise ValueError(f"expect {text!r} must lie within 100-599, low to high")
        return cls(*bounds)

    def __str__(self) -> str:
        return f"{self.low}-{self.high}"


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class WindowConfig(_Frozen):
    """``reload.window``: the days, wall-clock hours and IANA zone in which a due reload may be sent."""

    days: list[Day] | None = None  # None: every day
    between: str
    timezone: str

    @field_validator("days")
    @classmethod
    def _some_days(cls, value: list[Day] | None) -> list[Day] | None:
        if value is not None and not value:
            raise ValueError("days lists at least one day (leave it out for every day)")
        return value

    @model_validator(mode="after")
    def _parses(self) -> WindowConfig:
        self.window()  # ValueError with the reason (between, timezone), reported under reload.window
        return self

    def window(self) -> Window:
        """Return the window these words describe."""
        return Window.parse(between=self.between, timezone=self.timezone, days=list(self.days) if self.days else None)


class HealthConfig(_Frozen):
    """``reload.health``: a path GET over HTTPS after a reload, and the statuses that count as healthy."""

    path: str
    expect: str = "200-399"

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or any(c.isspace() or ord(c) < 32 for c in value):
            raise ValueError("path starts with / and holds no spaces or control characters (e.g. /healthz)")
        return value

    @field_validator("expect")
    @classmethod
    def _range(cls, value: str) -> str:
        Expect.parse(value)  # ValueError with the reason
        return value

    def expected(self) -> Expect:
        """Return the healthy statuses."""
        return Expect.parse(self.expect)
