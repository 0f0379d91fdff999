"""metrics/render_cache.py: each kind renders only when its part changes; bodies are valid in both formats."""

from __future__ import annotations

import dataclasses
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from gunicorn_cert_exporter.metrics import collector, samples
from gunicorn_cert_exporter.metrics.collector import SnapshotCollector
from gunicorn_cert_exporter.metrics.exposition import FORMATS, Format
from gunicorn_cert_exporter.metrics.render_cache import RenderCache
from gunicorn_cert_exporter.model import (
    CertFacts,
    EndpointResult,
    FileResult,
    MasterState,
    PatternResult,
    ScanStats,
    Snapshot,
    TargetState,
)
from gunicorn_cert_exporter.reasons import EndpointReason, FileReason
from gunicorn_cert_exporter.vocabulary import ScanKind


def _snapshot() -> Snapshot:
    return Snapshot(
        endpoints=(EndpointResult(endpoint="a:443", server_name="a"),),
        scans=((ScanKind.FILES, ScanStats(duration_seconds=0.1, finished_at=1.0)),),
    )


def test_a_scan_of_one_kind_never_re_renders_another_kinds_part() -> None:
    current = [_snapshot()]
    cache = RenderCache(snapshot=lambda: current[-1], live=[CollectorRegistry()])
    first = current[-1]
    cache.publish()
    before = dict(cache.renders)
    endpoints = (EndpointResult(endpoint="a:443", server_name="a", error=EndpointReason.DNS_FAILURE),)  # same endpoint
    current.append(dataclasses.replace(first, endpoints=endpoints, scans=((ScanKind.ENDPOINTS, ScanStats(0.2, 2.0)),)))
    cache.publish()
    after = dict(cache.renders)
    assert after[ScanKind.FILES] == before[ScanKind.FILES] and after[ScanKind.GUNICORN] == before[ScanKind.GUNICORN]
    assert (
        after[ScanKind.ENDPOINTS] == before[ScanKind.ENDPOINTS] + 1
        and after[ScanKind.EXPORTER] == before[ScanKind.EXPORTER] + 1
    )
    body = b"".join(cache.body("text", gzipped=False))
    assert b'gunicorn_cert_endpoint_error{address="",endpoint="a:443",reason="dns_failure"' in body


def test_openmetrics_body_has_each_family_once_and_one_eof() -> None:
    snapshot = _snapshot()
    cache = RenderCache(snapshot=lambda: snapshot, live=[CollectorRegistry()])
    cache.publish()
    text = b"".join(cache.body("openmetrics", gzipped=False)).decode()
    # The parser refuses a family split in two, or a missing EOF.
    names = [f.name for f in parse_openmetrics(text)]  # type: ignore[no-untyped-call]
    assert len(names) == len(set(names)) and text.count("# EOF") == 1 and text.endswith("# EOF\n")
    gzipped = b"".join(cache.body("openmetrics", gzipped=True))
    reader = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert reader.decompress(gzipped).decode() == text and reader.eof and not reader.unused_data


def _cert(n: int) -> CertFacts:
    return CertFacts(
        not_before=1e9 + n,
        not_after=2e9 + n,
        fingerprint_sha256=f"{n:064x}",
        serial=f"{n:x}",
        subject_cn=f'host "{n}"\\\n\r',  # every character the exposition escapes, and one it does not
        issuer_cn="CA",
        subject=f"CN=host {n}",
        issuer="CN=CA",
        sans=(),
        key_type="ecdsa",
        key_bits=256,
        spki_sha256=f"{n:064x}",
        signature_algorithm="ecdsa-with-SHA256",
        is_ca=False,
        self_signed=False,
    )


_FILES = st.builds(
    FileResult,
    path=st.sampled_from([f"/etc/ssl/{i}.pem" for i in range(8)] + ["/caf\u00e9/\udcff.pem"]),
    certs=st.lists(st.integers(0, 5).map(_cert), max_size=3).map(tuple),
    error=st.none() | st.sampled_from(FileReason),
    # NaN, infinities and exponents too; -0.0 equals 0.0, so a reused render may write it 0.0 (no source makes -0.0:
    # these are timestamps and durations), hence `+ 0.0`.
    changed_at=st.none() | st.floats().map(lambda v: v + 0.0),
)
_ENDPOINTS = st.builds(
    EndpointResult,
    endpoint=st.sampled_from(["a:443", "b:8443"]),
    server_name=st.sampled_from(["a", "b"]),
    error=st.none() | st.just(EndpointReason.DNS_FAILURE),
)
_SNAPSHOTS = st.builds(
    Snapshot,
    files=st.lists(_FILES, max_size=8).map(tuple),
    patterns=st.lists(
        st.builds(PatternResult, pattern=st.sampled_from(["/a/*", "/b/*"]), matches=st.integers(0, 3)), max_size=2
    ).map(tuple),
    endpoints=st.lists(_ENDPOINTS, max_size=3).map(tuple),
)


def _whole(cache: RenderCache, fmt: Format) -> bytes:
    plain = b"".join(cache.body(fmt, gzipped=False))
    reader = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert reader.decompress(b"".join(cache.body(fmt, gzipped=True))) == plain and reader.eof
    return plain


@settings(max_examples=150, deadline=None)
@given(st.lists(_SNAPSHOTS, min_size=1, max_size=6))
def test_a_part_rendered_piece_by_piece_equals_one_rendered_whole(snapshots: list[Snapshot]) -> None:
    """Files and endpoints come, go, change, repeat and reorder: reused pieces never leave stale or misplaced bytes."""
    current = [snapshots[0]]
    kept = RenderCache(snapshot=lambda: current[-1], live=[CollectorRegistry()])
    for snapshot in snapshots:
        current.append(snapshot)
        kept.publish()

        def this_snapshot(s: Snapshot = snapshot) -> Snapshot:
            return s

        cold = RenderCache(snapshot=this_snapshot, live=[CollectorRegistry()])
        cold.publish()
        registry = CollectorRegistry()
        registry.register(SnapshotCollector(this_snapshot))
        registry.register(kept.errors)  # the cache's own live series: every kind at 0
        for fmt in FORMATS:
            assert _whole(kept, fmt) == _whole(cold, fmt)
        assert _whole(kept, "text") == generate_latest(registry)
        assert _whole(kept, "openmetrics") == generate_openmetrics(registry)  # type: ignore[no-untyped-call]


def test_one_changed_file_among_many_renders_that_file_only(monkeypatch: pytest.MonkeyPatch) -> None:
    files = tuple(FileResult(path=f"/certs/{i}.pem", certs=(_cert(i),)) for i in range(200))
    current = [Snapshot(files=files)]
    cache = RenderCache(snapshot=lambda: current[-1], live=[CollectorRegistry()])
    cache.publish()
    rendered: list[str] = []
    real = collector.add_file

    def add_file(out: samples.Sink, result: FileResult) -> None:
        rendered.append(result.path)
        real(out, result)

    monkeypatch.setattr(collector, "add_file", add_file)
    renewed = dataclasses.replace(files[120], certs=(_cert(1000),))
    current.append(Snapshot(files=(*files[:120], renewed, *files[121:])))
    cache.publish()
    assert rendered == ["/certs/120.pem"]
    body = _whole(cache, "text")
    assert (
        f'fingerprint_sha256="{1000:064x}"'.encode() in body and f'fingerprint_sha256="{120:064x}"'.encode() not in body
    )


def _target(pid: int, *, name: str = "api") -> TargetState:
    return TargetState(
        name=name,
        cert=FileResult(path="cert.pem"),
        key=FileResult(path="key.pem"),
        endpoint=EndpointResult(endpoint="127.0.0.1:8443", server_name=""),
        master=MasterState(pid=pid, start_time=1.0, channel="control_socket"),
    )


def _errors(cache: RenderCache, kind: str) -> float | None:
    registry = CollectorRegistry()
    registry.register(cache.errors)
    return registry.get_sample_value("gunicorn_cert_exporter_render_errors_total", {"kind": kind})


def test_a_kind_whose_render_fails_keeps_its_last_bytes_and_the_other_kinds_publish(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 25 item 1: one kind's render failure (here through the entities seam) never stops another kind's: the
    failing kind keeps its last series, logs once with its traceback and counts; a renewed file still shows."""
    broken = [False]

    def entities(kind: ScanKind, snap: Snapshot) -> list[collector.Entity]:
        if broken[0] and kind is ScanKind.GUNICORN:
            raise OverflowError("int too large to convert to float")
        return collector.kind_entities(kind, snap)

    current = [dataclasses.replace(_snapshot(), targets=(_target(4242),))]
    cache = RenderCache(snapshot=lambda: current[-1], live=[CollectorRegistry()], entities=entities)
    cache.publish()
    assert _errors(cache, "gunicorn") == 0.0
    broken[0] = True
    for n in (1, 2, 3):  # three scans of other kinds while the gunicorn part can't render
        renewed = FileResult(path="/etc/tls/cert.pem", certs=(_cert(n),))
        current.append(dataclasses.replace(current[-1], files=(renewed,), targets=(_target(4242 + n),)))
        cache.publish()
        body = b"".join(cache.body("text", gzipped=False))
        assert f'fingerprint_sha256="{n:064x}"'.encode() in body  # the files kind published its fresh scan
        assert b'gunicorn_cert_master_pid{target="api"} 4242.0' in body  # the failing kind kept its last bytes
    assert _errors(cache, "gunicorn") == 3.0 and _errors(cache, "files") == 0.0
    logged = [r for r in caplog.records if r.getMessage().startswith("render failed")]
    assert len(logged) == 1 and "OverflowError" in str(vars(logged[0])["traceback"])
    broken[0] = False
    cache.publish()
    assert b'gunicorn_cert_master_pid{target="api"} 4245.0' in b"".join(cache.body("text", gzipped=False))


def test_a_pid_no_float_can_hold_renders_as_nan_instead_of_failing_the_kind() -> None:
    """Issue 25 item 1: a control socket that says pid 10**309 made float() raise in the gunicorn part."""
    snapshot = Snapshot(targets=(_target(10**309),))
    cache = RenderCache(snapshot=lambda: snapshot, live=[CollectorRegistry()])
    cache.publish()
    body = b"".join(cache.body("text", gzipped=False))
    assert b'gunicorn_cert_master_pid{target="api"} NaN' in body and _errors(cache, "gunicorn") == 0.0
