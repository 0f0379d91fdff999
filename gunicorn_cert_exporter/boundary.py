"""What a number from outside may be (pids, times, counts), and a short account of why one was refused.

Replies from a control socket and files under --storage.path are validated into these bounds where they are read
(pydantic models beside each reader); past that point no code needs to defend itself against 10**309 or NaN.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, ValidationError

MAX_PID = 4_194_304  # Linux's PID_MAX_LIMIT
CENTURY = 100 * 365.25 * 86400.0  # seconds: an uptime, or a time's distance from now, is at most this
MAX_COUNT = 1_000_000_000  # a reload count or the like: more is not a count this exporter can trust

Pid = Annotated[int, Field(ge=1, le=MAX_PID)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Seconds = Annotated[float, Field(ge=0.0, le=CENTURY, allow_inf_nan=False)]
Timestamp = Annotated[float, Field(allow_inf_nan=False)]  # its distance from now is checked where now is known


def brief(exc: ValidationError, *, limit: int = 200) -> str:
    """Say what the first refused value was and why, in one short line (never the whole input back)."""
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:
        return "invalid"
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "reply"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"[:limit]
