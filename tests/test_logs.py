"""logs.py: logfmt and JSON lines carry the extra fields, escaped."""

from __future__ import annotations

import json
import logging
import warnings

import pytest

from gunicorn_cert_exporter.logs import JSONFormatter, LogfmtFormatter, setup, show_warning


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


def test_python_warnings_become_log_lines_and_negative_serial_noise_is_debug(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = warnings.showwarning, root.handlers[:], root.level
    try:
        setup(level="info", fmt="json")
        assert warnings.showwarning is show_warning
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("PKCS#12 bundle could not be parsed as DER, falling back to BER", UserWarning, stacklevel=1)
            warnings.warn(
                "Parsed a serial number which wasn't positive (i.e., it was negative or zero), which is disallowed"
                " by RFC 5280. Loading this certificate will cause an exception in a future release of cryptography.",
                UserWarning,
                stacklevel=1,
            )
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        warnings.showwarning = saved[0]
        root.handlers[:] = saved[1]
        root.setLevel(saved[2])
    assert [(entry["level"], entry["category"]) for entry in lines] == [("warning", "UserWarning")]
    assert lines[0]["msg"].startswith("PKCS#12 bundle could not be parsed")
