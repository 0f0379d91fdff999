"""The /metrics body, rendered per scan kind when that kind publishes; a scrape joins ready bytes and live series.

Each kind's families (files, endpoints, gunicorn, exporter) are rendered in both text formats, and deflated, on
the thread that published them, and only when that kind's part of the snapshot changed. A scrape only encodes the
small live part (process, GC, HTTP refusals) and writes the parts one after another; a gzip body is one member made
of the parts' pre-deflated, byte-aligned blocks (RFC 1951 blocks can be concatenated) with one header and trailer.
"""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector

from gunicorn_cert_exporter.metrics.catalogue import CATALOGUE
from gunicorn_cert_exporter.metrics.collector import KINDS, kind_families, kind_inputs
from gunicorn_cert_exporter.model import Snapshot

Format = Literal["text", "openmetrics"]
FORMATS: tuple[Format, ...] = ("text", "openmetrics")
_EOF = b"# EOF\n"
_LEVEL = 1  # parts are deflated once per change; level 1 keeps a 100,000-file render fast at ~10x compression
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, no mtime, unknown OS
_FINAL_BLOCK = b"\x03\x00"  # an empty final fixed-Huffman block: ends the concatenated deflate stream


@dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes of the body, with their deflated form (sync-flushed, so chunks concatenate) and CRC-32."""

    raw: bytes
    deflated: bytes
    crc: int

    @classmethod
    def of(cls, raw: bytes) -> Chunk:
        """Deflate and checksum ``raw``."""
        compressor = zlib.compressobj(_LEVEL, zlib.DEFLATED, -15)
        return cls(raw, compressor.compress(raw) + compressor.flush(zlib.Z_SYNC_FLUSH), zlib.crc32(raw))


@dataclass(frozen=True, slots=True)
class Body:
    """The snapshot's part of a /metrics body in one format: chunks in order, their total CRC-32 and size."""

    chunks: tuple[Chunk, ...] = ()
    crc: int = 0
    size: int = 0
    gzip_head: bytes = _GZIP_HEADER  # the gzip header and every chunk's deflated blocks, joined once per publish


@dataclass(frozen=True, slots=True)
class _Part:
    inputs: object
    families: dict[Format, dict[str, tuple[bytes, Chunk]]]  # format -> family name -> (header, samples)


class _One(Collector):
    def __init__(self, family: Metric) -> None:
        self._family = family

    def collect(self) -> Iterable[Metric]:
        return [self._family]


class _Joined(Collector):
    def __init__(self, collectors: Sequence[Collector]) -> None:
        self._collectors = collectors

    def collect(self) -> Iterable[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


def _encode(fmt: Format, collector: Collector) -> bytes:
    if fmt == "openmetrics":
        rendered: bytes = generate_openmetrics(collector)  # type: ignore[no-untyped-call]
        return rendered.removesuffix(_EOF)
    return generate_latest(collector)


def _split(rendered: bytes) -> tuple[bytes, bytes]:
    """Split one family's exposition into its HELP/TYPE header and its samples."""
    first = rendered.index(b"\n") + 1
    second = rendered.index(b"\n", first) + 1
    return rendered[:second], rendered[second:]


def format_for(accept: str) -> tuple[Format, str]:
    """Choose the format and content type for an Accept header, as prometheus_client does."""
    _, content_type = choose_encoder(accept)
    return ("openmetrics" if content_type.startswith("application/openmetrics-text") else "text"), content_type


class RenderCache:
    """Hold each kind's rendered families and the assembled body per format; scrapes read without waiting."""

    def __init__(
        self,
        *,
        snapshot: Callable[[], Snapshot],
        live: Sequence[Collector],
        live_ttl: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._snapshot = snapshot
        self._live = _Joined(live)
        # Under a flood of scrapes the live series are encoded at most every live_ttl seconds; one scraper every
        # second or more (Prometheus) always gets them fresh.
        self._live_ttl, self._clock = live_ttl, clock
        self._live_cache: dict[Format, tuple[float, Chunk]] = {}
        self._parts: dict[str, _Part] = {}
        self._locks = {kind: threading.Lock() for kind in KINDS}
        self._pending = dict.fromkeys(KINDS, False)
        self._assembling = threading.Lock()
        self._bodies: dict[Format, Body] = dict.fromkeys(FORMATS, Body())
        self.renders = dict.fromkeys(KINDS, 0)  # how often each kind was rendered (benchmarks and tests read it)

    def publish(self, _published: Snapshot | None = None) -> None:
        """Render the kinds whose part of the snapshot changed, then assemble the bodies (in the caller's thread).

        The snapshot is read again under each kind's lock, so a late caller never renders older data over newer.
        A kind that another thread is rendering is marked pending and left to that thread, which looks again when
        it is done: a scan never waits for another kind's render, and no change is lost.
        """
        changed = False
        for kind in KINDS:
            self._pending[kind] = True
            lock = self._locks[kind]
            while self._pending[kind] and lock.acquire(blocking=False):
                try:
                    self._pending[kind] = False
                    snapshot = self._snapshot()
                    inputs = kind_inputs(kind, snapshot)
                    current = self._parts.get(kind)
                    if current is not None and (current.inputs is inputs or current.inputs == inputs):
                        continue
                    self._parts[kind] = self._render(kind, snapshot, inputs)
                    self.renders[kind] += 1
                    changed = True
                finally:
                    lock.release()
        if changed:
            self._assemble()

    def _render(self, kind: str, snapshot: Snapshot, inputs: object) -> _Part:
        families = kind_families(kind, snapshot).by_name
        rendered: dict[Format, dict[str, tuple[bytes, Chunk]]] = {}
        for fmt in FORMATS:
            rendered[fmt] = {}
            for name, family in families.items():
                header, samples = _split(_encode(fmt, _One(family)))
                rendered[fmt][name] = (header, Chunk.of(samples))
        return _Part(inputs, rendered)

    def _assemble(self) -> None:
        with self._assembling:
            parts = [self._parts[kind] for kind in KINDS if kind in self._parts]
            for fmt in FORMATS:
                chunks: list[Chunk] = []
                for spec in CATALOGUE:
                    present = [p.families[fmt][spec.name] for p in parts if spec.name in p.families[fmt]]
                    if present:
                        chunks.append(Chunk.of(present[0][0]))
                        chunks.extend(samples for _, samples in present)
                crc = 0
                for chunk in chunks:
                    crc = zlib.crc32(chunk.raw, crc)
                head = b"".join([_GZIP_HEADER, *(c.deflated for c in chunks)])
                self._bodies[fmt] = Body(tuple(chunks), crc, sum(len(c.raw) for c in chunks), head)

    def live_is_fresh(self, fmt: Format) -> bool:
        """Tell whether ``body`` would only join bytes (no collector to run): then it may run anywhere."""
        cached = self._live_cache.get(fmt)
        return cached is not None and cached[0] > self._clock()

    def body(self, fmt: Format, *, gzipped: bool) -> list[bytes]:
        """Return the whole body for a scrape, as pieces to write in order: ready parts, then the live series."""
        body = self._bodies[fmt]
        cached = self._live_cache.get(fmt)
        now = self._clock()
        if cached is None or cached[0] <= now:
            cached = (
                now + self._live_ttl,
                Chunk.of(_encode(fmt, self._live) + (_EOF if fmt == "openmetrics" else b"")),
            )
            self._live_cache[fmt] = cached
        tail = cached[1]
        if not gzipped:
            return [*(c.raw for c in body.chunks), tail.raw]
        trailer = struct.pack("<II", zlib.crc32(tail.raw, body.crc), (body.size + len(tail.raw)) & 0xFFFFFFFF)
        return [body.gzip_head, tail.deflated + _FINAL_BLOCK + trailer]
