"""metrics/render_cache.py: each kind renders only when its part changes; bodies are valid in both formats."""

from __future__ import annotations

import dataclasses
import zlib

from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from gunicorn_cert_exporter.metrics.render_cache import RenderCache
from gunicorn_cert_exporter.model import EndpointReason, EndpointResult, ScanStats, Snapshot


def _snapshot() -> Snapshot:
    return Snapshot(
        endpoints=(EndpointResult(endpoint="a:443", server_name="a"),),
        scans=(("files", ScanStats(duration_seconds=0.1, finished_at=1.0)),),
    )


def test_a_scan_of_one_kind_never_re_renders_another_kinds_part() -> None:
    current = [_snapshot()]
    cache = RenderCache(snapshot=lambda: current[-1], live=[CollectorRegistry()])
    first = current[-1]
    cache.publish()
    before = dict(cache.renders)
    endpoints = (EndpointResult(endpoint="a:443", server_name="a", error=EndpointReason.DNS_FAILURE),)  # same endpoint
    current.append(dataclasses.replace(first, endpoints=endpoints, scans=(("endpoints", ScanStats(0.2, 2.0)),)))
    cache.publish()
    after = dict(cache.renders)
    assert after["files"] == before["files"] and after["gunicorn"] == before["gunicorn"]
    assert after["endpoints"] == before["endpoints"] + 1 and after["exporter"] == before["exporter"] + 1
    body = b"".join(cache.body("text", gzipped=False))
    assert b'gunicorn_cert_endpoint_error{address="",endpoint="a:443",reason="dns_failure"' in body


def test_openmetrics_body_has_each_family_once_and_one_eof() -> None:
    snapshot = _snapshot()
    cache = RenderCache(snapshot=lambda: snapshot, live=[CollectorRegistry()])
    cache.publish()
    text = b"".join(cache.body("openmetrics", gzipped=False)).decode()
    names = [f.name for f in parse_openmetrics(text)]  # the parser refuses a family split in two, or a missing EOF
    assert len(names) == len(set(names)) and text.count("# EOF") == 1 and text.endswith("# EOF\n")
    gzipped = b"".join(cache.body("openmetrics", gzipped=True))
    reader = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert reader.decompress(gzipped).decode() == text and reader.eof and not reader.unused_data
