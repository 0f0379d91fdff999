"""Control characters spelled out, for log lines and JSON documents: text from outside can't forge a line.

A control-socket error, a file name or a certificate's subject may hold CR, ESC, DEL, C1 controls, the Unicode line
separators or bidi overrides. Written raw, they start a fake log line, recolour a terminal or reorder what an
operator reads. Every one is written as an escape instead: ``\\xNN`` in logfmt, ``\\uNNNN`` in JSON.
"""

from __future__ import annotations

import json
import math
import re

CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""C0, DEL, C1, the line and paragraph separators, and the bidi marks, embeddings, overrides and isolates."""
_NOT_C0 = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")  # json escapes C0 itself


def _spelled(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def spell_out(text: str) -> str:
    """Write every control character of ``text`` as ``\\xNN`` (up to U+00FF) or ``\\uNNNN``."""
    return CONTROL.sub(_spelled, text)


_INT_LIMIT = 1 << 63  # past this, an integer from outside is no count or pid (and past 4,300 digits str() raises)


def _finite(value: object) -> object:
    """Replace numbers that JSON can't hold (NaN, infinities, absurd integers) with null, anywhere in a document."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int) and not -_INT_LIMIT < value < _INT_LIMIT:
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def strict_json(document: object, *, indent: int | None = None) -> str:
    """Write a document as strict JSON: null for numbers JSON can't hold, every control character escaped.

    Non-ASCII text stays readable; only the characters of ``CONTROL`` are written as ``\\uNNNN``.
    """
    text = json.dumps(_finite(document), indent=indent, ensure_ascii=False, allow_nan=False, default=str)
    return _NOT_C0.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
