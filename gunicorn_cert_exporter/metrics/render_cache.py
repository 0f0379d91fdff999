"""The /metrics body: the snapshot's families rendered once per snapshot and shared by every scrape."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from gunicorn_cert_exporter.model import Snapshot

_EOF = b"# EOF\n"


@dataclass(frozen=True, slots=True)
class _Rendered:
    snapshot: Snapshot
    shared: bytes  # the snapshot's families, without OpenMetrics' closing "# EOF": the live part ends the body
    gzipped: bytes


class Exposition:
    """Render the snapshot registry once per (snapshot, format); live metrics (process, GC) every scrape.

    A scrape that arrives while another renders a newer snapshot gets the previous bytes rather than waiting:
    they are the last completed render, as the snapshot itself is the last completed scan.
    """

    def __init__(
        self, *, snapshot: Callable[[], Snapshot], registry: CollectorRegistry, live: CollectorRegistry
    ) -> None:
        self._snapshot = snapshot
        self.registry = registry
        self.live = live
        self._cache: dict[str, _Rendered] = {}
        self._rendering = threading.Lock()

    def render(self, accept: str, *, gzip_ok: bool) -> tuple[tuple[bytes, ...], str]:
        """Return the body's parts for an Accept header (gzip members when the client takes gzip) and its type.

        The parts are written one after the other: the shared part is never copied per scrape.
        """
        encoder, content_type = choose_encoder(accept)
        cached = self._cached(encoder, content_type)
        live = encoder(self.live)
        if gzip_ok:
            # RFC 1952: a gzip stream may hold several members; clients (Prometheus too) read them as one body.
            return (cached.gzipped, gzip.compress(live, compresslevel=5)), content_type
        return (cached.shared, live), content_type

    def _cached(self, encoder: Callable[[CollectorRegistry], bytes], key: str) -> _Rendered:
        snap = self._snapshot()
        cached = self._cache.get(key)
        if cached is not None and cached.snapshot is snap:
            return cached
        if cached is not None and not self._rendering.acquire(blocking=False):
            return cached  # another scrape renders the newer snapshot: serve the last render meanwhile
        if cached is None:
            self._rendering.acquire()
        try:
            snap = self._snapshot()
            current = self._cache.get(key)
            if current is not None and current.snapshot is snap:
                return current
            shared = encoder(self.registry).removesuffix(_EOF)
            rendered = _Rendered(snap, shared, gzip.compress(shared, compresslevel=5))
            self._cache[key] = rendered
            return rendered
        finally:
            self._rendering.release()
