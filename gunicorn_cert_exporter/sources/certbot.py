"""Certbot lineages: ``renewal/*.conf`` under certbot's config directory -> each lineage's cert, CA and renewal point.

A renewal file is configobj text that certbot writes: top-level ``cert = /etc/letsencrypt/live/NAME/cert.pem``
(a symlink into ``archive/``) and ``renew_before_expiry = 30 days`` (when set), and ``server = URL`` (the ACME
directory) under ``[renewalparams]``. ``parse`` reads that text (pure); ``lineages`` reads the directory, bounded.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

from gunicorn_cert_exporter.safe_read import read_regular

MAX_LINEAGES = 10_000
_CONF_CAP = 64 * 1024
_ASSIGNMENT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
_SECTION = re.compile(r"^\s*\[+\s*([^\]]+?)\s*\]+\s*$")
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")
_UNITS = {
    "s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
    "w": 604800.0, "week": 604800.0, "weeks": 604800.0,
    "month": 30 * 86400.0, "months": 30 * 86400.0,
    "y": 365 * 86400.0, "year": 365 * 86400.0, "years": 365 * 86400.0,
}  # fmt: skip
_log = logging.getLogger("gunicorn_cert_exporter.certbot")


@dataclass(frozen=True, slots=True)
class Lineage:
    """One certbot lineage: where its leaf is, which ACME directory issued it, when certbot renews it."""

    name: str
    cert: str  # the lineage's cert.pem (live/NAME/cert.pem, a symlink into archive/NAME/)
    server: str  # the ACME directory URL
    renew_before_expiry: float | None = None  # seconds before notAfter; None: certbot's default


def interval(text: str) -> float | None:
    """Read certbot's ``renew_before_expiry`` (``30 days``, ``2 weeks``, ``1 month 2 days``) as seconds."""
    parts = _PART.findall(text.strip().lower())
    if not parts or _PART.sub("", text.strip().lower()).strip():
        return None
    total = 0.0
    for number, unit in parts:
        if unit not in _UNITS:
            return None
        total += float(number) * _UNITS[unit]
    return total if total > 0 else None


def _value(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return raw[1:-1]
    return raw.split(" #", 1)[0].strip()


def parse(text: str, *, name: str, config_dir: str) -> Lineage | None:
    """Read one renewal file's text; None when it names no cert or no server."""
    top: dict[str, str] = {}
    params: dict[str, str] = {}
    section = ""
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if header := _SECTION.match(line):
            section = header.group(1)
            continue
        if assignment := _ASSIGNMENT.match(line):
            key, value = assignment.group(1), _value(assignment.group(2))
            (top if not section else params if section == "renewalparams" else {})[key] = value
    cert = top.get("cert")
    server = params.get("server")
    if not cert or not server:
        return None
    if not os.path.isabs(cert):
        cert = os.path.join(config_dir, cert)
    before = interval(top["renew_before_expiry"]) if "renew_before_expiry" in top else None
    return Lineage(name=name, cert=cert, server=server, renew_before_expiry=before)


def lineages(config_dir: str) -> tuple[Lineage, ...]:
    """Read every ``renewal/*.conf`` under ``config_dir``, sorted by name; unreadable files are skipped and logged."""
    renewal = os.path.join(config_dir, "renewal")
    try:
        names = sorted(n for n in os.listdir(renewal) if n.endswith(".conf"))[:MAX_LINEAGES]
    except OSError:
        return ()
    found = []
    for filename in names:
        path = os.path.join(renewal, filename)
        try:
            text = read_regular(path, _CONF_CAP).decode("utf-8", "replace")
        except OSError as exc:
            _log.warning("certbot renewal file unreadable", extra={"path": path, "problem": exc.strerror or str(exc)})
            continue
        lineage = parse(text, name=filename.removesuffix(".conf"), config_dir=config_dir)
        if lineage is not None:
            found.append(lineage)
    return tuple(found)
