"""logs.py: logfmt and JSON lines carry the extra fields, escaped."""

from __future__ import annotations

import json
import logging

from gunicorn_cert_exporter.logs import JSONFormatter, LogfmtFormatter


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("gunicorn_cert_exporter.reload", logging.INFO, "x.py", 1, "reload", None, None)
    record.__dict__.update(extra)
    return record


def test_logfmt_quotes_and_escapes_values() -> None:
    line = LogfmtFormatter().format(_record(target="api", reason='a "quoted"\nreason', dry_run=False, pid=7))
    assert "level=info logger=gunicorn_cert_exporter.reload msg=reload target=api" in line
    assert 'reason="a \\"quoted\\"\\nreason"' in line and "dry_run=false pid=7" in line
    assert "\n" not in line


def test_json_lines_parse_and_keep_fields() -> None:
    line = JSONFormatter().format(_record(target="api", outcome="confirmed"))
    assert json.loads(line) | {"ts": None} == {
        "ts": None,
        "level": "info",
        "logger": "gunicorn_cert_exporter.reload",
        "msg": "reload",
        "target": "api",
        "outcome": "confirmed",
    }
