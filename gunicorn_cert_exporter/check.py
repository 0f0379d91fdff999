"""The ``check`` command's verdicts: one row per certificate or failure, Nagios exit codes. Pure."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from enum import IntEnum

from gunicorn_cert_exporter.model import CertFacts, Snapshot

_DAY = 86400.0


class Status(IntEnum):
    """Nagios plugin exit codes."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


# CRITICAL outranks UNKNOWN, which outranks WARNING: an unreadable cert is worse than one expiring in 3 weeks.
_RANK = {Status.OK: 0, Status.WARNING: 1, Status.UNKNOWN: 2, Status.CRITICAL: 3}


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


def _cert_row(source: str, index: int, cert: CertFacts, *, now: float, warning: float, critical: float) -> Row:
    left = cert.not_after - now
    if cert.not_before > now:
        status, note = Status.CRITICAL, "not yet valid"
    elif left <= 0:
        status, note = Status.CRITICAL, "expired"
    elif left < critical:
        status, note = Status.CRITICAL, "expires soon"
    elif left < warning:
        status, note = Status.WARNING, "expires soon"
    else:
        status, note = Status.OK, ""
    when = datetime.fromtimestamp(cert.not_after, timezone.utc).strftime("%Y-%m-%d %H:%M")
    return Row(status, source, str(index), cert.subject_cn or cert.subject, when, f"{left / _DAY:.1f}", note)


def evaluate(snap: Snapshot, *, now: float, warning: float, critical: float) -> list[Row]:
    """Judge every certificate, file, endpoint and target of a snapshot."""
    rows: list[Row] = []
    for result in snap.files:
        if result.error is not None:
            rows.append(Row(Status.UNKNOWN, result.path, "", "", "", "", f"{result.error.value}: {result.detail}"))
        rows.extend(
            _cert_row(result.path, i, c, now=now, warning=warning, critical=critical)
            for i, c in enumerate(result.certs)
        )
    for endpoint in snap.all_endpoints:
        if endpoint.error is not None:
            rows.append(Row(Status.UNKNOWN, endpoint.endpoint, "", "", "", "", endpoint.error.value))
        for address in endpoint.addresses:
            source = f"{endpoint.endpoint} ({address.address})"
            if address.error is not None:
                rows.append(Row(Status.CRITICAL, source, "", "", "", "", f"{address.error.value}: {address.detail}"))
                continue
            for i, cert in enumerate(address.chain):
                row = _cert_row(source, i, cert, now=now, warning=warning, critical=critical)
                if i == 0 and not address.verified and address.verify_error is not None:
                    row = replace(row, status=Status.CRITICAL, note=f"not verified: {address.verify_error.value}")
                rows.append(row)
    for target in snap.targets:
        problems = [f"drift on {d.address}" for d in target.drift if d.mismatch]
        if target.key_match is False:
            problems.append("key_file does not match cert_file")
        if not target.master.up:
            problems.append(f"master {target.master.error.value if target.master.error else 'down'}")
        status = Status.CRITICAL if target.key_match is False else Status.WARNING if problems else Status.OK
        rows.append(Row(status, f"gunicorn {target.name}", "", "", "", "", "; ".join(problems) or "in sync"))
    return rows


def verdict(rows: list[Row]) -> Status:
    """Return the worst status of all rows."""
    return max((r.status for r in rows), key=_RANK.__getitem__, default=Status.OK)


def as_table(rows: list[Row]) -> str:
    """Render rows as an aligned text table."""
    header = ("STATUS", "SOURCE", "IDX", "SUBJECT", "NOT AFTER (UTC)", "DAYS", "NOTE")
    cells = [header] + [(r.status.name, r.source, r.index, r.subject, r.not_after, r.days_left, r.note) for r in rows]
    widths = [min(max(len(c[i]) for c in cells), 60) for i in range(len(header))]
    lines = ["  ".join(c[i][:60].ljust(widths[i]) for i in range(len(header))).rstrip() for c in cells]
    return "\n".join(lines) + f"\n\n{verdict(rows).name}: {len(rows)} checks\n"


def as_json(rows: list[Row]) -> str:
    """Render rows as a JSON document."""
    items = [{**asdict(r), "status": r.status.name} for r in rows]
    return json.dumps({"status": verdict(rows).name, "checks": items}, indent=2) + "\n"
