"""What an ACME server's renewal window (ARI, RFC 9773) says of a certificate still in use. Pure.

Two findings. **Renewal overdue** (WARNING): the window has ended and the same certificate is still on disk or
served. **The CA asks for renewal now** (CRITICAL): the window ends while clearly more than the usual renewal share
of the lifetime is left (a third, or the certbot lineage's ``renew_before_expiry``), or it moved earlier than the
latest window seen for that certificate: the signs of a coming mass revocation.
"""

from __future__ import annotations

from datetime import datetime, timezone

from gunicorn_cert_exporter.model import RenewalAdvice

USUAL_SHARE = 1 / 3
"""The share of its lifetime left when a certificate is usually renewed (certbot's default)."""
EARLY_MARGIN = 0.05
"""A window ending with up to this share of the lifetime left beyond the usual point is still a usual window."""
MOVE_SLACK = 3600.0
"""A window end earlier than the latest seen by more than this (seconds) has moved earlier."""
DAY = 86400.0


def _when(instant: float) -> str:
    return datetime.fromtimestamp(instant, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def advise(
    *,
    end: float,
    latest_end: float,
    not_before: float,
    not_after: float,
    renew_before: float | None,
    now: float,
) -> tuple[RenewalAdvice, str]:
    """Judge a window ending at ``end`` for a certificate still in use; return the advice and a short note."""
    lifetime = max(not_after - not_before, 1.0)
    usual = renew_before if renew_before is not None else lifetime * USUAL_SHARE
    left_at_end = not_after - end
    if left_at_end > usual + lifetime * EARLY_MARGIN:
        return (
            RenewalAdvice.REQUESTED,
            f"the CA asks for renewal now: its window ends with {left_at_end / DAY:.1f}d left",
        )
    if end < latest_end - MOVE_SLACK:
        return RenewalAdvice.REQUESTED, f"the CA asks for renewal now: its window moved earlier, to {_when(end)}"
    if now >= end:
        return RenewalAdvice.OVERDUE, f"renewal overdue: the CA's window ended {_when(end)}"
    return RenewalAdvice.OK, ""
