"""Log lines in logfmt or JSON, with the fields given through ``extra=``."""

from __future__ import annotations

import logging
import sys
import traceback
import warnings
from datetime import datetime, timezone
from typing import TextIO

from gunicorn_cert_exporter.escapes import CONTROL, spell_out, strict_json

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    fields: dict[str, object] = {
        "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    fields.update((k, v) for k, v in vars(record).items() if k not in _STANDARD)
    if record.exc_info and record.exc_info[0] is not None:
        fields["exc"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        fields["traceback"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()  # where, not just what
    return fields


def _logfmt_value(value: object) -> str:
    text = "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    if text and not any(c in text for c in ' ="\\') and not CONTROL.search(text):
        return text
    text = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return '"' + spell_out(text) + '"'  # CR, ESC, DEL, C1, U+2028, bidi overrides: never raw in a line


class LogfmtFormatter(logging.Formatter):
    """Format records as ``key=value`` pairs."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record."""
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())


class JSONFormatter(logging.Formatter):
    """Format records as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record."""
        return strict_json(_fields(record))


_warnings_log = logging.getLogger("gunicorn_cert_exporter.warnings")
# Old roots in CA bundles have negative serials and cryptography warns on each parse; the certificate is still
# reported, so the warning is noise for an operator: debug only.
_QUIET_WARNINGS = ("serial number",)


def show_warning(  # noqa: PLR0917  (warnings.showwarning's positional signature)
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Log a Python warning as one structured line instead of raw text on stderr."""
    text = str(message)
    quiet = any(words in text.lower() for words in _QUIET_WARNINGS)
    _warnings_log.log(
        logging.DEBUG if quiet else logging.WARNING,
        text,
        extra={"category": category.__name__, "source": f"{filename}:{lineno}"},
    )


def setup(*, level: str, fmt: str) -> None:
    """Send the exporter's logs, and Python's warnings, to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))
    warnings.showwarning = show_warning  # what logging.captureWarnings does, but with fields instead of raw text
