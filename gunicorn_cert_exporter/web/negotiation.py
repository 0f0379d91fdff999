"""Content negotiation: which exposition format (Accept) and whether gzip (Accept-Encoding), q-values honoured.

Both headers are lists of ``token;param=value`` items with an optional ``q`` weight; they are parsed here, once.
prometheus_client's ``choose_encoder`` and ``gzip_accepted`` ignore q-values (``gzip;q=0`` means no gzip, and
``application/openmetrics-text;q=0`` means no OpenMetrics), so each gets only the items a client takes, best first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client.exposition import choose_encoder

from gunicorn_cert_exporter.metrics.exposition import Format

_TEXT = ("text/plain", "text/*", "*/*")


@dataclass(frozen=True, slots=True)
class _Item:
    token: str  # lower-cased: a media type or a content coding
    text: str  # the item as the client wrote it, parameters included
    quality: float


def _quality(value: str) -> float:
    try:
        quality = float(value)
    except ValueError:
        return 0.0
    return min(quality, 1.0) if math.isfinite(quality) else 0.0


def _items(header: str) -> list[_Item]:
    """Parse a header's items in the client's order; a malformed ``q`` counts as 0 (not wanted)."""
    items = []
    for text in header.split(","):
        token, *params = (part.strip() for part in text.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                quality = _quality(value.strip())
        if token:
            items.append(_Item(token.lower(), text.strip(), quality))
    return items


def format_for(accept: str) -> tuple[Format, str]:
    """Choose the format and content type for an Accept header: the client's most wanted one that is served.

    prometheus_client names each item's content type (the OpenMetrics version and escaping it asked for); an item
    it can't serve (OpenMetrics 0.0.1, ``application/json``) is passed over, and text is the fallback.
    """
    wanted = sorted((item for item in _items(accept) if item.quality > 0), key=lambda item: -item.quality)
    for item in wanted:  # the sort is stable: items of equal weight keep the client's order
        _, content_type = choose_encoder(item.text)
        if content_type.startswith("application/openmetrics-text"):
            return "openmetrics", content_type
        if item.token in _TEXT:
            return "text", content_type
    return "text", choose_encoder("")[1]


def gzip_wanted(accept_encoding: str) -> bool:
    """Tell whether the client takes gzip: its ``gzip`` item, else its ``*`` item, has a q-value above 0."""
    items = _items(accept_encoding)
    for token in ("gzip", "*"):
        quality = next((item.quality for item in items if item.token == token), None)
        if quality is not None:
            return quality > 0
    return False
