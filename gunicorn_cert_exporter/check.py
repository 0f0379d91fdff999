"""The ``check`` command's verdicts: one row per certificate or failure, most urgent first, Nagios exit codes. Pure."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone

from gunicorn_cert_exporter.bands import Severity as Status
from gunicorn_cert_exporter.status_rows import SourceRow, StatusView
from gunicorn_cert_exporter.text import printable

__all__ = ["Row", "Status", "as_json", "as_table", "counts", "rows", "summary_line", "verdict"]


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the verdict."""

    status: Status
    source: str
    index: str
    subject: str
    not_after: str
    days_left: str
    note: str
    expires_at: float | None = None  # for ordering; the table shows ``not_after``
    lifetime_days: str = ""
    share_left: str = ""  # of the lifetime, e.g. "25%"
    band: str = ""  # the certificate's band: "retired" rows are OK and counted apart


def _source_rows(source: SourceRow) -> list[Row]:
    name = f"{source.source} ({source.address})" if source.address else source.source
    out = []
    if source.kind == "pattern":
        out.append(Row(Status.WARNING, name, "", "", "", "", "pattern matches no file"))
    elif source.error:
        note = f"{source.error}: {source.detail}" if source.detail else source.error
        out.append(Row(source.severity, name, "", "", "", "", note))
    for cert in source.certs:
        when = _utc(cert.not_after)
        days, life = f"{cert.days_left:.1f}", f"{cert.lifetime_days:.1f}"
        share = "" if cert.share_left is None else f"{round(cert.share_left * 100)}%"
        where = f"{name} [{cert.entry}]" if cert.entry else name  # the cluster, user or alias beside the path
        row = Row(cert.band.severity, where, str(cert.index), cert.subject, when, days, cert.note, cert.not_after)
        out.append(replace(row, lifetime_days=life, share_left=share, band=cert.band.value))
    return out


def _utc(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%d %H:%M")


def rows(view: StatusView) -> list[Row]:
    """Judge every certificate, source and target of a view, most urgent first (problems before OK rows)."""
    out = [r for source in view.sources for r in _source_rows(source)]
    for target in view.targets:
        note = "; ".join(target.problems) or "in sync"
        out.append(Row(target.severity, f"gunicorn {target.name}", "", "", "", "", note))
    # Worst state first; within it failures (no date) before the soonest expiry.
    return sorted(out, key=lambda r: (-r.status.rank, r.expires_at if r.expires_at is not None else float("-inf")))


def verdict(checks: list[Row]) -> Status:
    """Return the worst status of all rows."""
    return max((r.status for r in checks), key=lambda s: s.rank, default=Status.OK)


def counts(checks: list[Row]) -> dict[str, int]:
    """Count rows per state, in the order Nagios lists them, retired trust anchors apart from the OK ones.

    E.g. {'critical': 1, 'warning': 2, 'unknown': 0, 'ok': 139, 'retired': 5}.
    """
    order = (Status.CRITICAL, Status.WARNING, Status.UNKNOWN, Status.OK)
    tally = {s.name.lower(): sum(1 for r in checks if r.status is s and r.band != "retired") for s in order}
    return {**tally, "retired": sum(1 for r in checks if r.band == "retired")}


def summary_line(checks: list[Row]) -> str:
    """Say the verdict and the count per state, e.g. ``CRITICAL: 1 critical, 2 warning, 1 unknown, 139 ok, 5 retired``.

    Retired trust anchors are named only when there are some.
    """
    tally = [f"{n} {state}" for state, n in counts(checks).items() if n or state != "retired"]
    return f"{verdict(checks).name}: " + ", ".join(tally)


def as_table(checks: list[Row], *, problems_only: bool = False) -> str:
    """Render rows as an aligned text table; every field has its control characters spelled out."""
    shown = [r for r in checks if r.status is not Status.OK] if problems_only else checks
    header = ("STATUS", "SOURCE", "IDX", "SUBJECT", "NOT AFTER (UTC)", "DAYS", "LIFETIME", "LEFT", "NOTE")
    fields = [
        (r.status.name, r.source, r.index, r.subject, r.not_after, r.days_left, r.lifetime_days, r.share_left, r.note)
        for r in shown
    ]
    # Escape first, then cut; the note is last and needs no alignment, so it is never cut.
    cells = [header] + [(*(printable(f)[:60] for f in row[:-1]), printable(row[-1])) for row in fields]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(header))).rstrip() for c in cells]
    if problems_only and not shown:
        lines = ["no problems"]
    return "\n".join(lines) + f"\n\n{summary_line(checks)}\n"


def as_json(checks: list[Row], *, problems_only: bool = False) -> str:
    """Render rows as a JSON document (json.dumps escapes every control character)."""
    shown = [r for r in checks if r.status is not Status.OK] if problems_only else checks
    items = [{**asdict(r), "status": r.status.name} for r in shown]
    for item in items:
        del item["expires_at"]
    document = {"status": verdict(checks).name, "counts": counts(checks), "checks": items}
    return json.dumps(document, indent=2) + "\n"
