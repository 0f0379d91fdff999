"""ACME Renewal Information (RFC 9773): the certID, the directory's ``renewalInfo`` URL, the suggested window.

``cert_id``, ``renewal_info_url`` and ``window`` are pure (bytes in, values out); ``Client`` asks a server through
a bounded ``Fetcher`` and keeps each directory's ``renewalInfo`` URL for an interval.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from gunicorn_cert_exporter.sources.fetch import Fetcher, FetchReason

NO_RENEWAL_INFO = "no_renewal_info"  # the directory has no renewalInfo URL: the CA does not offer ARI
NO_KEY_IDENTIFIER = "no_key_identifier"  # the certificate has no AKI keyIdentifier: no certID can be made
_EXPLANATION_CAP = 512


@dataclass(frozen=True, slots=True)
class Window:
    """The renewal window a CA suggests for one certificate (epoch seconds), and why if it says."""

    start: float
    end: float
    explanation_url: str = ""


@dataclass(frozen=True, slots=True)
class Answer:
    """A window, or why there is none; and when the server asks to be asked again (Retry-After)."""

    window: Window | None = None
    error: str = ""  # a FetchReason value, NO_RENEWAL_INFO or NO_KEY_IDENTIFIER
    detail: str = ""
    retry_after: float | None = None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def cert_id(*, key_identifier: bytes, serial: int) -> str:
    """Return RFC 9773's certID: base64url(AKI keyIdentifier) "." base64url(the serial's DER INTEGER content)."""
    # The DER INTEGER's content octets: big-endian two's complement, minimal, so a set top bit gets a 0x00 first.
    der = serial.to_bytes(serial.bit_length() // 8 + 1, "big", signed=False) if serial >= 0 else b""
    return f"{_b64url(key_identifier)}.{_b64url(der)}"


def renewal_info_url(body: bytes) -> str | None:
    """Return the ``renewalInfo`` URL of an ACME directory document, or None if it has none."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    url = document.get("renewalInfo") if isinstance(document, dict) else None
    return url if isinstance(url, str) and url.startswith(("https://", "http://")) else None


def _instant(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return when.timestamp() if when.tzinfo is not None else None


def window(body: bytes) -> Window | None:
    """Parse a renewalInfo response: ``suggestedWindow`` start < end (RFC 3339), and ``explanationURL`` if any."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("suggestedWindow"), dict):
        return None
    start, end = _instant(document["suggestedWindow"].get("start")), _instant(document["suggestedWindow"].get("end"))
    if start is None or end is None or end <= start:
        return None
    explanation = document.get("explanationURL")
    usable = (
        isinstance(explanation, str)
        and explanation.startswith(("https://", "http://"))
        and len(explanation) <= _EXPLANATION_CAP
        and explanation.isprintable()
    )
    return Window(start, end, explanation if usable and isinstance(explanation, str) else "")


class Client:
    """Ask ACME servers for windows; each directory is read at most once per ``directory_ttl``."""

    def __init__(self, *, fetcher: Fetcher, clock: Callable[[], float], directory_ttl: float) -> None:
        self._fetcher = fetcher
        self._clock = clock
        self._ttl = directory_ttl
        self._lock = threading.Lock()
        self._directories: dict[str, tuple[float, str | None, str]] = {}  # url -> (read at, renewalInfo, error)

    def ask(self, *, directory: str, key_identifier: str, serial: str) -> Answer:
        """Ask the window of the certificate with this AKI keyIdentifier (hex) and serial (hex)."""
        if not key_identifier:
            return Answer(error=NO_KEY_IDENTIFIER, detail="the certificate has no authority key identifier")
        base, error = self._renewal_info(directory)
        if base is None:
            return Answer(error=error, detail=f"directory {directory}: {error}")
        identity = cert_id(key_identifier=bytes.fromhex(key_identifier), serial=int(serial, 16))
        answer = self._fetcher.get(base.rstrip("/") + "/" + identity, headers={"Accept": "application/json"})
        if not answer.ok:
            return Answer(
                error=answer.error.value if answer.error else "", detail=answer.detail, retry_after=answer.retry_after
            )
        parsed = window(answer.body)
        if parsed is None:
            return Answer(
                error=FetchReason.PARSE_ERROR.value, detail="no valid suggestedWindow", retry_after=answer.retry_after
            )
        return Answer(window=parsed, retry_after=answer.retry_after)

    def _renewal_info(self, directory: str) -> tuple[str | None, str]:
        now = self._clock()
        with self._lock:
            known = self._directories.get(directory)
        if known is not None and now - known[0] < self._ttl:
            return known[1], known[2]
        answer = self._fetcher.get(directory, headers={"Accept": "application/json"})
        if not answer.ok:
            url, error = None, answer.error.value if answer.error else FetchReason.ERROR.value
        else:
            url = renewal_info_url(answer.body)
            error = "" if url is not None else NO_RENEWAL_INFO
        if error != FetchReason.RETRY_LATER.value:
            with self._lock:
                self._directories[directory] = (now, url, error)
        return url, error
