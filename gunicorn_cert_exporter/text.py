"""Text that may reach a terminal, a log or a page: control and format characters spelled out, once for all."""

from __future__ import annotations

import unicodedata


def printable(text: str) -> str:
    """Spell out control and format characters (ESC, newlines, C1, DEL, bidi overrides) so a terminal shows text.

    Printable characters, non-ASCII ones included (``café``), stay as they are.
    """
    if text.isprintable():
        return text
    out = []
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            code = ord(char)
            out.append(f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)
