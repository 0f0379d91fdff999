"""Snapshot to the HTML status page: every cert and endpoint, days left, drift, last reload. Pure."""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape

from gunicorn_cert_exporter import __version__
from gunicorn_cert_exporter.model import CertFacts, Snapshot

_DAY = 86400.0
_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1b1b1b}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid #ddd}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{background:#e6f4ea}.warn{background:#fff4ce}.crit{background:#fde7e9}.muted{color:#666}
code{font-size:.9em}
"""


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _days(cert: CertFacts, now: float) -> tuple[str, str]:
    days = (cert.not_after - now) / _DAY
    css = "crit" if days < 7 or cert.not_before > now else "warn" if days < 28 else "ok"
    return f"{days:.1f}", css


def render(snap: Snapshot, *, now: float) -> str:
    """Render the status page; every value from a certificate or config is escaped."""
    rows = []
    for target in snap.targets:
        drift = [d for d in target.drift if d.mismatch]
        state = "DRIFT on " + ", ".join(d.address for d in drift) if drift else "in sync"
        css = "crit" if drift or target.key_match is False or not target.master.up else "ok"
        rows.append(
            f"<tr class={css}><td>{escape(target.name)}</td><td>{escape(state)}</td>"
            f"<td>{'yes' if target.key_match else 'NO' if target.key_match is False else '?'}</td>"
            f"<td>{'up' if target.master.up else escape(target.master.error.value if target.master.error else 'down')}"
            f"</td><td>{_when(target.last_reload)}</td><td class=num>{target.reload_signals}</td>"
            f"<td class=num>{target.reload_failures}</td></tr>"
        )
    targets = (
        "<h2>Gunicorn targets</h2><table><tr><th>target</th><th>drift</th><th>key matches</th><th>master</th>"
        "<th>last reload</th><th>signals</th><th>failures</th></tr>" + "".join(rows) + "</table>"
        if rows
        else ""
    )
    cert_rows = []
    for result in sorted(snap.files, key=lambda f: min((c.not_after for c in f.certs), default=float("inf"))):
        if result.error is not None and not result.certs:
            cert_rows.append(
                f"<tr class=crit><td><code>{escape(result.path)}</code></td><td>-</td><td colspan=3>"
                f"{escape(result.error.value)}: {escape(result.detail)}</td></tr>"
            )
        for index, cert in enumerate(result.certs):
            days, css = _days(cert, now)
            cert_rows.append(
                f"<tr class={css}><td><code>{escape(result.path)}</code></td><td class=num>{index}</td>"
                f"<td>{escape(cert.subject_cn or cert.subject)}</td><td>{_when(cert.not_after)}</td>"
                f"<td class=num>{days}</td></tr>"
            )
    endpoint_rows = []
    for endpoint in snap.all_endpoints:
        if endpoint.error is not None:
            endpoint_rows.append(
                f"<tr class=crit><td>{escape(endpoint.endpoint)}</td><td>-</td><td colspan=4>"
                f"{escape(endpoint.error.value)}</td></tr>"
            )
        for address in endpoint.addresses:
            leaf = address.leaf
            if leaf is None:
                reason = address.error.value if address.error else "no certificate"
                endpoint_rows.append(
                    f"<tr class=crit><td>{escape(endpoint.endpoint)}</td><td>{escape(address.address)}</td>"
                    f"<td colspan=4>{escape(reason)}</td></tr>"
                )
                continue
            days, css = _days(leaf, now)
            verified = (
                "yes" if address.verified else escape(address.verify_error.value if address.verify_error else "no")
            )
            endpoint_rows.append(
                f"<tr class={css if address.verified else 'crit'}><td>{escape(endpoint.endpoint)}</td>"
                f"<td>{escape(address.address)}</td><td>{escape(leaf.subject_cn or leaf.subject)}</td>"
                f"<td>{_when(leaf.not_after)}</td><td class=num>{days}</td><td>{verified}</td></tr>"
            )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>gunicorn-cert-exporter</title>"
        f"<style>{_STYLE}</style></head><body><h1>gunicorn-cert-exporter</h1>"
        f"<p class=muted>version {escape(__version__)} · <a href=metrics>metrics</a> · <a href=healthz>healthz</a>"
        f" · page built {_when(now)}</p>{targets}"
        "<h2>Endpoints</h2><table><tr><th>endpoint</th><th>address</th><th>leaf subject</th><th>expires</th>"
        "<th>days left</th><th>verified</th></tr>" + "".join(endpoint_rows) + "</table>"
        "<h2>Certificate files</h2><table><tr><th>path</th><th>index</th><th>subject</th><th>expires</th>"
        "<th>days left</th></tr>" + "".join(cert_rows) + "</table></body></html>"
    )
