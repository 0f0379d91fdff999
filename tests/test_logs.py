"""logs.py: logfmt and JSON lines carry the extra fields, escaped."""

from __future__ import annotations

import json
import logging
import struct
import time
import unicodedata
import warnings
from pathlib import Path

import pytest

from gunicorn_cert_exporter.config import EndpointConfig, GunicornTarget, ReloadConfig
from gunicorn_cert_exporter.logs import JSONFormatter, LogfmtFormatter, setup, show_warning
from gunicorn_cert_exporter.model import AddressResult, EndpointResult
from gunicorn_cert_exporter.reload.watcher import TargetWatcher
from gunicorn_cert_exporter.sources import certs
from gunicorn_cert_exporter.sources.endpoints import Prober
from gunicorn_cert_exporter.sources.files import FileScanner
from tests.support import PKI, Issued, UnixServer


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


# Every character that can forge or disguise a line: C0 (CR, ESC), DEL, C1 (NEL, CSI), the Unicode line and
# paragraph separators, and the bidi marks, embeddings, overrides and isolates.
HOSTILE = "\r\x1b\x00\x7f\x85\x9b\u2028\u2029\u200e\u202a\u202e\u2066\u2069"


def _raw_controls(line: str) -> list[str]:
    return [c for c in line if c in HOSTILE or c in "\n\t" or unicodedata.category(c) in ("Cc", "Zl", "Zp")]


@pytest.mark.parametrize("formatter", [LogfmtFormatter(), JSONFormatter()], ids=["logfmt", "json"])
def test_every_control_character_is_escaped_in_both_formats(formatter: logging.Formatter) -> None:
    """Issue 25 item 6: logs.py escaped only backslash, quote, newline and tab; CR and ESC forged a line."""
    line = formatter.format(_record(reason=f"x{HOSTILE}y", path=HOSTILE))
    assert _raw_controls(line) == []
    if isinstance(formatter, JSONFormatter):
        assert json.loads(line)["reason"] == f"x{HOSTILE}y"  # escaped, not lost
    else:
        assert 'reason="x\\x0d\\x1b\\x00\\x7f\\x85\\x9b\\u2028\\u2029\\u200e\\u202a\\u202e\\u2066\\u2069y"' in line


class _OldLeaf(Prober):
    """The endpoint serves ``leaf`` on 127.0.0.1 (the files hold a newer one): a drift, so the rules are asked."""

    def __init__(self, leaf: Issued) -> None:
        super().__init__()
        self.leaf = certs.cert_facts(leaf.cert)

    def probe(self, config: EndpointConfig) -> EndpointResult:
        served = AddressResult(address="127.0.0.1", chain=(self.leaf,))
        return EndpointResult(endpoint=config.address, server_name=config.sni or "", addresses=(served,))


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_a_control_socket_error_text_cannot_forge_an_audit_line(
    tmp_path: Path, pki: PKI, root: Issued, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """Issue 25 item 6, as reported: an error reply of ``\\r\\x1b[31mlevel=error msg=INJECTED`` went raw into the
    audit line of the reload decision; it is escaped there, and no line holds a raw control character."""
    injected = "\r\x1b[31mlevel=error msg=INJECTED\u2028\u202e"
    body = json.dumps({"id": 1, "status": "error", "error": injected}).encode()
    server = UnixServer(tmp_path / "ctl", reply=struct.pack(">I", len(body)) + body)
    new = pki.leaf(root)
    (tmp_path / "cert.pem").write_bytes(new.cert_pem)
    (tmp_path / "key.pem").write_bytes(new.key_pem)
    target = GunicornTarget(
        name="api",
        cert_file=str(tmp_path / "cert.pem"),
        key_file=str(tmp_path / "key.pem"),
        endpoint="127.0.0.1:8443",
        control_socket=str(tmp_path / "ctl"),
        timeout=1.0,
        reload=ReloadConfig(enabled=True, after=0),
    )
    watcher = TargetWatcher(prober=_OldLeaf(pki.leaf(root)), scanner=FileScanner(clock=time.time, max_size=1 << 20))
    root_logger = logging.getLogger()
    saved = root_logger.handlers[:], root_logger.level
    try:
        setup(level="debug", fmt=fmt)
        state = watcher.scan([target])[0]
    finally:
        root_logger.handlers[:], _ = saved
        root_logger.setLevel(saved[1])
        server.close()
    assert state.decision == "blocked" and "INJECTED" in state.decision_reason  # the text did reach the audit line
    err = capsys.readouterr().err
    assert _raw_controls(err.replace("\n", "")) == []  # one record, one line: nothing but "\n" ends or splits one
    lines = err.split("\n")
    audit = [line for line in lines if "reload decision" in line]
    assert len(audit) == 1 and "INJECTED" in audit[0]
    assert not any(line.lstrip().startswith("level=error") for line in lines)
    if fmt == "logfmt":
        assert "\\x0d\\x1b[31mlevel=error msg=INJECTED\\u2028\\u202e" in audit[0]
