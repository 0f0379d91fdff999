"""The HTML status page: summary, Gunicorn targets, then every source by urgency. Pure; complete without JS."""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from html import escape
from typing import TypeVar

from gunicorn_cert_exporter import __version__, status
from gunicorn_cert_exporter.bands import DAY, Band, Severity, Thresholds
from gunicorn_cert_exporter.model import Snapshot
from gunicorn_cert_exporter.status_rows import CertRow, SourceRow, StatusView, TargetRow
from gunicorn_cert_exporter.text import printable

_log = logging.getLogger("gunicorn_cert_exporter.web")
R = TypeVar("R")
A = TypeVar("A")

_STYLE = """
:root{--fg:#1b1b1b;--bg:#fff;--muted:#5f6368;--line:#ddd;--head:#f4f4f4;--ok:#1e7e34;--warn:#9a6700;
--crit:#c5221f;--unk:#6f42c1;--okbg:#e6f4ea;--warnbg:#fff4ce;--critbg:#fde7e9;--unkbg:#f1e9fb;color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--fg:#e8eaed;--bg:#16181b;--muted:#9aa0a6;--line:#3c4043;--head:#23262b;
--ok:#81c995;--warn:#fdd663;--crit:#f28b82;--unk:#c58af9;--okbg:#1e3a29;--warnbg:#3d3416;--critbg:#4a1f1f;--unkbg:#33214a}}
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;padding:1em;max-width:1400px;color:var(--fg);
background:var(--bg)}
h1{font-size:1.35em;margin:.2em 0}h2{font-size:1.1em;margin:1.4em 0 .5em}a{color:inherit}
.muted{color:var(--muted)}code,.mono{font-family:ui-monospace,monospace;font-size:.9em;overflow-wrap:anywhere}
.cards{display:flex;flex-wrap:wrap;gap:.5em;list-style:none;padding:0;margin:.6em 0}
.cards li{border:1px solid var(--line);border-left:.4em solid var(--line);border-radius:.3em;padding:.3em .7em;
min-width:6.5em}
.cards b{display:block;font-size:1.5em;font-variant-numeric:tabular-nums}
.cards li.crit{border-left-color:var(--crit)}.cards li.warn{border-left-color:var(--warn)}
.cards li.ok{border-left-color:var(--ok)}.cards li.unk{border-left-color:var(--unk)}.cards li.zero{opacity:.6}
.badge{display:inline-block;font-size:.8em;font-weight:700;padding:.05em .45em;border-radius:.25em;white-space:nowrap}
.badge.crit{background:var(--critbg);color:var(--crit)}.badge.warn{background:var(--warnbg);color:var(--warn)}
.badge.ok{background:var(--okbg);color:var(--ok)}.badge.unk{background:var(--unkbg);color:var(--unk)}
form{display:flex;align-items:center;gap:.4em;margin:.8em 0}[hidden]{display:none!important}
input[type=search]{flex:1;max-width:30em;font:inherit;padding:.3em .5em}
button{font:inherit}
table{border-collapse:collapse;width:100%}th,td{text-align:left;vertical-align:top;padding:.35em .5em;
border-bottom:1px solid var(--line)}th{background:var(--head);font-weight:600}
tr.crit>td:first-child{box-shadow:inset .3em 0 var(--crit)}tr.warn>td:first-child{box-shadow:inset .3em 0 var(--warn)}
tr.ok>td:first-child{box-shadow:inset .3em 0 var(--ok)}tr.unk>td:first-child{box-shadow:inset .3em 0 var(--unk)}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}.when{white-space:nowrap}
#sources td:nth-child(2){min-width:20em}#sources td:last-child{min-width:17em}#sources th{white-space:nowrap}
ul.plain,ol.members{margin:0;padding:0;list-style:none}ol.members li{padding:.15em 0;border-top:1px dashed var(--line)}
summary{cursor:pointer}details[open]>summary{margin-bottom:.3em}
@media (max-width:760px){body{padding:.6em}.cards{display:grid;grid-template-columns:repeat(3,1fr);gap:.35em}
.cards li{min-width:0;padding:.2em .45em;font-size:.9em}.cards b{font-size:1.2em}
table.rows thead{display:none}
table.rows tr{display:block;border-bottom:1px solid var(--line);padding:.3em 0}
table.rows td{display:block;border:0;padding:.1em .5em}table.rows td.num{text-align:left}
table.rows td.empty{display:none}
table.rows td[data-label]::before{content:attr(data-label) ": ";color:var(--muted);font-weight:600}}
"""

# Filtering as one types; without JavaScript the form sends ?q= and the server filters the same rows.
_SCRIPT = """
(function(){var q=document.getElementById('q');if(!q)return;
function has(el,t){return el.textContent.toLowerCase().indexOf(t)>=0}
function apply(){var t=q.value.trim().toLowerCase();
document.querySelectorAll('tr.row').forEach(function(tr){tr.hidden=!!t&&!has(tr,t);
var d=tr.querySelector('details');if(!d)return;var items=d.querySelectorAll('li');var n=0;
items.forEach(function(li){if(t&&has(li,t))n++});
items.forEach(function(li){li.hidden=n>0&&!has(li,t)});if(t)d.open=n>0});}
q.addEventListener('input',apply);document.getElementById('filter').addEventListener('submit',function(e){
e.preventDefault();apply()});if(q.value)apply();})();
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# Nothing but this page's own style and script may run, whatever a certificate or file name smuggles in.
_CSP = (
    f"default-src 'none'; style-src {_sha256(_STYLE)}; script-src {_sha256(_SCRIPT)}; "
    "form-action 'self'; base-uri 'none'"
)
_CSS = {Severity.OK: "ok", Severity.WARNING: "warn", Severity.CRITICAL: "crit", Severity.UNKNOWN: "unk"}


def _t(value: object) -> str:
    """Escape any value for HTML text or a quoted attribute, control characters spelled out."""
    return escape(printable(str(value)))


def _when(ts: float | None, *, utc: bool = True) -> str:
    if ts is None:
        return "-"
    try:
        return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M" + (" UTC" if utc else ""))
    except (ValueError, OverflowError, OSError):  # NaN, or beyond year 9999: say so, never fail the page
        return "invalid time"


def _ago(ts: float, now: float) -> str:
    seconds = max(0.0, now - ts)
    for unit, size in (("d", DAY), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def _badge(severity: Severity, text: str | None = None) -> str:
    return f"<span class='badge {_CSS[severity]}'>{_t(text or severity.name)}</span>"


def _summary(view: StatusView) -> str:
    counts = asdict(view.summary)
    cards = (
        ("expired", "expired", "crit"),
        ("critical", "critical", "crit"),
        ("warning", "warning", "warn"),
        ("ok", "ok", "ok"),
        ("retired", "retired", "ok"),
        ("errors", "errors", "crit"),
        ("drifting_targets", "drifting targets", "warn"),
        ("blocked_reloads", "blocked reloads", "warn"),
    )
    items = "".join(
        f"<li class='{css if counts[key] or key == 'ok' else 'zero'}' data-count={key}><b>{counts[key]}</b>{label}</li>"
        for key, label, css in cards
    )
    return f"<section id=summary aria-label=Summary><ul class=cards>{items}</ul></section>"


def _edge(text: str) -> str:
    """Say an edge as a reader does: ``28d, 25%`` -> ``min(28d, 25% of lifetime)``."""
    text = text.replace("%", "% of lifetime")
    return f"min({text})" if "," in text else text


def _bands(view: StatusView) -> str:
    warning, critical = (_edge(str(edge)) for edge in (view.thresholds.warning, view.thresholds.critical))
    return f"<span id=bands>warning below {_t(warning)} left, critical below {_t(critical)}</span>"


def _left(cert: CertRow) -> str:
    """Say the share of its lifetime a certificate has left, e.g. ``25% of 90 d``."""
    share = "-" if cert.share_left is None else f"{round(cert.share_left * 100)}%"
    return f"{share} of {_days(cert.lifetime_days)}"


def _days(days: float) -> str:
    return f"{days * 24:.0f} h" if 0 < days < 10 else f"{days:.0f} d"


def _target(target: TargetRow, now: float) -> str:
    drift = []
    for row in target.addresses:
        if row.state == "drift":
            since = f" since {_when(row.since)} ({_ago(row.since, now)})" if row.since is not None else ""
            drift.append(f"<li>{_badge(Severity.WARNING, 'drift')} <code>{_t(row.address)}</code>{_t(since)}</li>")
        elif row.state == "unknown":
            drift.append(
                f"<li>{_badge(Severity.UNKNOWN, 'unknown')} <code>{_t(row.address)}</code> {_t(row.reason)}</li>"
            )
        else:
            drift.append(f"<li>{_badge(Severity.OK, 'in sync')} <code>{_t(row.address)}</code></li>")
    key = "yes" if target.key_match else "NO" if target.key_match is False else "unknown"
    if target.master_up:
        started = f", started {_when(target.master_started)}" if target.master_started else ""
        master = f"up · pid {target.master_pid} · {target.workers} workers{started}"
    else:
        master = f"down: {target.master_error or 'unknown'}"
    decision = f"{target.decision}: {target.decision_reason}" if target.decision else "-"
    problems = "; ".join(target.problems) or "in sync"
    return (
        f"<tr class='row {_CSS[target.severity]}'><td data-label=state>{_badge(target.severity)}</td>"
        f"<td data-label=target><b>{_t(target.name)}</b><br><code>{_t(target.endpoint)}</code>"
        f"<br><span class=muted>{_t(problems)}</span></td>"
        f"<td data-label=drift><ul class=plain>{''.join(drift)}</ul></td><td data-label='key matches'>{key}</td>"
        f"<td data-label=master>{_t(master)}</td><td data-label='last reload'>{_when(target.last_reload)}</td>"
        f"<td data-label='last decision'>{_t(decision)}</td>"
        f"<td data-label='signals / failures' class=num>{target.reload_signals} / {target.reload_failures}</td></tr>"
    )


def _cert(cert: CertRow) -> str:
    return (
        f"{_badge(cert.band.severity, cert.band.value)} <span class=muted>#{cert.index}</span> {_t(cert.subject)}"
        f"{' <span class=entry>' + _t(cert.entry) + '</span>' if cert.entry else ''}"
        f" <span class=muted>· {_when(cert.not_after)} · {cert.days_left:.1f} d · {_left(cert)}"
        f"{' · ' + _t(cert.note) if cert.note else ''}"
        f"{' · self-issued' if cert.issuer == cert.subject else ' · issuer ' + _t(cert.issuer)}</span>"
    )


def _matches(cert: CertRow, query: str) -> bool:
    text = f"{cert.subject} {cert.entry} {cert.issuer} {cert.note} {cert.band.value} {cert.fingerprint_sha256}"
    return query in text.lower()


def _source(row: SourceRow, query: str) -> str:
    where = f"{row.source} ({row.address})" if row.address else row.source
    soonest = row.soonest
    notes = [f"{row.error}: {row.detail}" if row.detail else row.error] if row.error else []
    if row.kind == "pattern":
        notes = ["pattern matches no file"]
    if row.verify_reason:
        notes.append(f"not verified: {row.verify_reason}")
    elif row.verified:
        notes.append("verified")
    left = "-" if soonest is None else _left(soonest)
    if soonest is None:
        cert, expires, days = "-", "-", "-"
    elif len(row.certs) == 1:
        subject = f"{soonest.subject} [{soonest.entry}]" if soonest.entry else soonest.subject
        cert, expires, days = _t(subject), _when(soonest.not_after, utc=False), f"{soonest.days_left:.1f}"
        notes += [soonest.note] if soonest.note and soonest.note not in notes else []
    else:
        shown = [c for c in row.certs if _matches(c, query)] if query else []
        members = shown or list(row.certs)
        bands = {b: sum(1 for c in row.certs if c.band is b) for b in Band}
        tally = ", ".join(f"{n} {b.value}" for b, n in bands.items() if n)
        items = "".join(f"<li>{_cert(c)}</li>" for c in members)
        cert = (
            f"<details{' open' if shown else ''}><summary>{_t(soonest.subject)} <span class=muted>"
            f"(soonest of {len(row.certs)}: {tally})</span></summary><ol class=members>{items}</ol></details>"
        )
        expires, days = _when(soonest.not_after, utc=False), f"{soonest.days_left:.1f}"
        notes += [soonest.note] if soonest.note else []
    empty = " class=empty" if soonest is None else ""  # a phone hides the cells of a source with no certificate
    number = "'num empty'" if soonest is None else "num"
    when = "'when empty'" if soonest is None else "when"
    return (
        f"<tr class='row {_CSS[row.severity]}' data-band={row.band.value}>"
        f"<td data-label=state>{_badge(row.severity, row.band.value)}</td>"
        f"<td data-label={row.kind}><code>{_t(where)}</code></td>"
        f"<td data-label=certificate{empty}>{cert}</td><td data-label=expires class={when}>{expires}</td>"
        f"<td data-label='days left' class={number}>{days}</td>"
        f"<td data-label='lifetime left' class={number}>{left}</td>"
        f"<td data-label=notes>{_t('; '.join(notes))}</td></tr>"
    )


def _source_matches(row: SourceRow, query: str) -> bool:
    text = f"{row.kind} {row.source} {row.address} {row.server_name} {row.band.value} {row.error} {row.detail}"
    return query in f"{text} {row.verify_reason}".lower() or any(_matches(c, query) for c in row.certs)


def _target_matches(row: TargetRow, query: str) -> bool:
    text = " ".join([row.name, row.endpoint, row.drift, *row.problems, *(a.address for a in row.addresses)])
    return query in text.lower()


def _row(render: Callable[[R, A], str], row: R, arg: A, *, columns: int) -> str:
    """Render one row; a row whose data can't be formatted says so instead of failing the whole page."""
    try:
        return render(row, arg)
    except Exception as exc:  # noqa: BLE001  (one value from outside must not answer 500 for every row)
        _log.warning("status page row not shown", exc_info=exc, extra={"row": type(row).__name__})
        return (
            f"<tr class='row unk'><td data-label=state>{_badge(Severity.UNKNOWN)}</td><td colspan={columns - 1}>"
            f"this row could not be shown: {_t(type(exc).__name__)}</td></tr>"
        )


def render_view(view: StatusView, *, query: str = "") -> str:
    """Render a status view; only the rows matching ``query`` (case-insensitive) are listed, the summary is whole."""
    needle = query.strip().lower()
    targets = [t for t in view.targets if not needle or _target_matches(t, needle)]
    sources = [s for s in view.sources if not needle or _source_matches(s, needle)]
    target_table = (
        "<h2>Gunicorn targets</h2><table id=targets class=rows><thead><tr><th>state</th><th>target</th>"
        "<th>drift per address</th><th>key matches</th><th>master</th><th>last reload</th><th>last decision</th>"
        "<th>signals / failures</th></tr></thead><tbody>"
        + "".join(_row(_target, t, view.generated_at, columns=8) for t in targets)
        + "</tbody></table>"
        if view.targets
        else ""
    )
    shown = f" · showing {len(sources)} of {len(view.sources)}" if needle else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        f'<meta http-equiv=Content-Security-Policy content="{_CSP}">'
        f"<title>{_t(status.headline(view))} · gunicorn-cert-exporter</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>gunicorn-cert-exporter {_badge(view.status)}</h1>"
        f"<p class=muted>last scan {_when(view.scanned_at)} · page {_when(view.generated_at)}"
        f" · version {_t(__version__)} · <a href=metrics>metrics</a>"
        f" · <a href=api/v1/status>JSON</a> · <a href=healthz>healthz</a><br>{_bands(view)}</p></header>"
        f"{_summary(view)}"
        "<form id=filter method=get role=search><label class=muted for=q>Filter</label>"
        f"<input id=q type=search name=q value='{_t(query)}' placeholder='path, subject, address, reason'>"
        f"<button>Filter</button></form>{target_table}"
        f"<h2>Certificates and endpoints, most urgent first{_t(shown)}</h2><table id=sources class=rows><thead><tr>"
        "<th>state</th><th>source</th><th>certificate</th><th>expires (UTC)</th><th>days left</th>"
        "<th>lifetime left</th><th>notes</th></tr>"
        "</thead><tbody>" + "".join(_row(_source, s, needle, columns=7) for s in sources) + "</tbody></table>"
        f"<script>{_SCRIPT}</script></body></html>"
    )


def render(snap: Snapshot, *, now: float, query: str = "", thresholds: Thresholds | None = None) -> str:
    """Render the status page of a snapshot with the given bands (the default ones without)."""
    return render_view(status.build(snap, now=now, thresholds=thresholds), query=query)
