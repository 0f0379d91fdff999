"""The /metrics body, rendered per scan kind when that kind publishes; a scrape joins ready bytes and live series.

When a kind's part of the snapshot changed, only its changed entities (a file, a pattern, an endpoint) are rendered
again, on the thread that published; every other entity's bytes are copied from the last render. Each family's
samples are kept once for both text formats (they write samples alike), deflated. A scrape only encodes the small
live part (process, GC, HTTP refusals) and writes the parts one after another; a gzip body is one member made of
the parts' pre-deflated, byte-aligned blocks (RFC 1951 blocks can be concatenated) with one header and trailer.

Each kind renders on its own: a kind whose render fails (a number no format can write) keeps its last bytes, logs
once and counts in ``gunicorn_cert_exporter_render_errors_total{kind}``; the other kinds publish as usual.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
import traceback
import zlib
from array import array
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from gunicorn_cert_exporter.metrics.catalogue import BY_NAME, CATALOGUE
from gunicorn_cert_exporter.metrics.collector import KINDS, Entity, kind_entities, kind_inputs
from gunicorn_cert_exporter.metrics.exposition import EOF, FORMATS, HEADERS, Format, encode, sample_line
from gunicorn_cert_exporter.model import Snapshot

_LEVEL = 1  # parts are deflated once per change; level 1 keeps a 100,000-file render fast at ~10x compression
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, no mtime, unknown OS
_FINAL_BLOCK = b"\x03\x00"  # an empty final fixed-Huffman block: ends the concatenated deflate stream
_log = logging.getLogger("gunicorn_cert_exporter.metrics")


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


_HEADERS = {fmt: {name: Chunk.of(header) for name, header in headers.items()} for fmt, headers in HEADERS.items()}


@dataclass(frozen=True, slots=True)
class _Family:
    """The samples of one family in a part (the same in both formats), and each entity's share of their bytes."""

    samples: Chunk
    lengths: array[int]  # bytes per entity, in entity order (0 for an entity without a sample in this family)


@dataclass(frozen=True, slots=True)
class _Part:
    inputs: object
    entities: dict[Hashable, tuple[int, object]]  # entity key -> (position, value it was rendered from)
    families: dict[str, _Family]


class _Lines:
    """Sample lines of the entities being rendered: family name -> entity index -> lines."""

    def __init__(self) -> None:
        self.owner = 0
        self.lines: dict[str, dict[int, list[str]]] = {}

    def add(self, name: str, labels: Sequence[str], value: float) -> None:
        self.lines.setdefault(name, {}).setdefault(self.owner, []).append(sample_line(name, labels, value))


class _Joined(Collector):
    def __init__(self, collectors: Sequence[Collector]) -> None:
        self._collectors = collectors

    def collect(self) -> Iterable[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


class RenderErrors(Collector):
    """Count failed renders per kind; log the first failure of each run of failures, with its traceback."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals = dict.fromkeys(KINDS, 0)
        self._failing: dict[str, str] = {}  # kind -> the error type of its current run of failures

    def failed(self, kind: str, exc: Exception) -> None:
        """Count one failed render of ``kind``; log it unless the kind already fails with the same error type."""
        with self._lock:
            self._totals[kind] += 1
            repeated = self._failing.get(kind) == type(exc).__name__
            self._failing[kind] = type(exc).__name__
        if not repeated:
            _log.error(
                "render failed: this kind keeps its last series",
                extra={
                    "kind": kind,
                    "reason": f"{type(exc).__name__}: {str(exc)[:200]}",
                    "traceback": "".join(traceback.format_exception(exc)),
                },
            )

    def rendered(self, kind: str) -> None:
        """End the kind's run of failures: its next failure is logged again."""
        with self._lock:
            self._failing.pop(kind, None)

    def collect(self) -> Iterable[Metric]:
        """Expose the totals, every kind from the start."""
        spec = BY_NAME["gunicorn_cert_exporter_render_errors"]
        family = CounterMetricFamily(spec.name, spec.help, labels=list(spec.labels))
        with self._lock:
            for kind, count in self._totals.items():
                family.add_metric([kind], count)
        return [family]


def _splice(segments: Sequence[tuple[int, int]], last: _Family | None, fresh: dict[int, list[str]]) -> _Family | None:
    """One family of the new part: runs of reused entities copied from ``last``, fresh entities' lines between."""
    pieces: list[bytes | memoryview] = []
    lengths: array[int] = array("q")
    view = memoryview(last.samples.raw) if last is not None else None
    starts = [0, *accumulate(last.lengths)] if last is not None else []
    for start, count in segments:
        if start < 0:
            lines = fresh.get(count)
            piece = "".join(lines).encode() if lines else b""
            pieces.append(piece)
            lengths.append(len(piece))
        elif last is not None and view is not None:
            pieces.append(view[starts[start] : starts[start + count]])
            lengths.extend(last.lengths[start : start + count])
        else:
            lengths.extend(array("q", bytes(8 * count)))
    raw = b"".join(pieces)
    return _Family(Chunk.of(raw), lengths) if raw else None


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
        entities: Callable[[str, Snapshot], list[Entity]] = kind_entities,
    ) -> None:
        self._snapshot = snapshot
        self._entities = entities
        self.errors = RenderErrors()
        self._live = _Joined([*live, self.errors])
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
                    changed = self._publish_kind(kind) or changed
                finally:
                    lock.release()
        if changed:
            self._assemble()

    def _publish_kind(self, kind: str) -> bool:
        """Render one kind if its inputs changed; tell whether its part did. A failure keeps the last part."""
        snapshot = self._snapshot()
        inputs = kind_inputs(kind, snapshot)
        current = self._parts.get(kind)
        if current is not None and (current.inputs is inputs or current.inputs == inputs):
            return False
        try:
            part = self._render(kind, snapshot, inputs)
        except Exception as exc:  # noqa: BLE001  (a value no format can write must not stop the other kinds)
            self.errors.failed(kind, exc)  # tried again at the next publish: a passing failure heals there
            return False
        self.errors.rendered(kind)
        self._parts[kind] = part
        self.renders[kind] += 1
        return True

    def _render(self, kind: str, snapshot: Snapshot, inputs: object) -> _Part:
        """Render the entities whose value changed; every other entity's bytes are copied from the last part.

        Of 10,000 files, one renewed certificate re-renders one file; the families are then joined and deflated.
        """
        entities = self._entities(kind, snapshot)
        previous = self._parts.get(kind)
        before = previous.entities if previous is not None else {}
        keys: dict[Hashable, tuple[int, object]] = {}
        segments: list[tuple[int, int]] = []  # (old position, count) of reused runs, or (-1, index among fresh)
        fresh = _Lines()
        for position, entity in enumerate(entities):
            keys.setdefault(entity.key, (position, entity.value))
            old = before.get(entity.key)
            if old is not None and (old[1] is entity.value or old[1] == entity.value):
                start, count = segments[-1] if segments else (-1, 0)
                if start >= 0 and start + count == old[0]:
                    segments[-1] = (start, count + 1)
                else:
                    segments.append((old[0], 1))
            else:
                segments.append((-1, fresh.owner))
                entity.add(fresh)
                fresh.owner += 1
        last = previous.families if previous is not None else {}
        families: dict[str, _Family] = {}
        for name in [*last, *(n for n in fresh.lines if n not in last)]:
            made = _splice(segments, last.get(name), fresh.lines.get(name, {}))
            if made is not None:
                families[name] = made
        return _Part(inputs, keys, families)

    def _assemble(self) -> None:
        with self._assembling:
            parts = [self._parts[kind] for kind in KINDS if kind in self._parts]
            for fmt in FORMATS:
                chunks: list[Chunk] = []
                for spec in CATALOGUE:
                    present = [p.families[spec.name].samples for p in parts if spec.name in p.families]
                    if present:
                        chunks.append(_HEADERS[fmt][spec.name])
                        chunks.extend(present)
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
                Chunk.of(encode(fmt, self._live) + (EOF if fmt == "openmetrics" else b"")),
            )
            self._live_cache[fmt] = cached
        tail = cached[1]
        if not gzipped:
            return [*(c.raw for c in body.chunks), tail.raw]
        trailer = struct.pack("<II", zlib.crc32(tail.raw, body.crc), (body.size + len(tail.raw)) & 0xFFFFFFFF)
        return [body.gzip_head, tail.deflated + _FINAL_BLOCK + trailer]
