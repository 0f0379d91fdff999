"""Numbers from outside that no format can write never break more than their own source (issue 25, items 1-3).

The page answers 200 whatever the snapshot holds, ``/api/v1/status`` is strict JSON (null for unknown numbers),
and ``/metrics`` keeps publishing fresh scans of the other sources while a Gunicorn target says absurd things.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gunicorn_cert_exporter.metrics.render_cache import RenderCache
from gunicorn_cert_exporter.model import (
    AddressDrift,
    AddressResult,
    EndpointResult,
    FileResult,
    MasterState,
    ProcessInfo,
    ScanStats,
    Snapshot,
    TargetState,
)
from gunicorn_cert_exporter.reasons import FileReason
from gunicorn_cert_exporter.service import ProbeOutcome
from gunicorn_cert_exporter.sources import certs
from gunicorn_cert_exporter.vocabulary import ScanKind
from gunicorn_cert_exporter.web.routes import App
from gunicorn_cert_exporter.web.server import WebServer
from gunicorn_cert_exporter.web.webconfig import BasicAuth
from tests.support import PKI, ControlServer, Issued, RunningExporter, StartExporter, eventually, free_port


def _refuse(_constant: str) -> object:
    raise ValueError(f"not strict JSON: {_constant}")


def strict(body: bytes) -> object:
    """Parse as a strict JSON parser does: NaN, Infinity and -Infinity are errors."""
    return json.loads(body, parse_constant=_refuse)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _absurd(pki: PKI, root: Issued, value: float) -> Snapshot:
    """A target whose every time is ``value``, and a file and an endpoint whose certificate dates are too."""
    facts = certs.parse(pki.leaf(root).cert_pem).certs[0]
    bad = dataclasses.replace(facts, not_after=value)
    worker = ProcessInfo(pid=11, ppid=10, start_time=value, cmdline=(), name="worker")
    endpoint = EndpointResult("127.0.0.1:8443", "", addresses=(AddressResult("127.0.0.1", chain=(bad,)),))
    target = TargetState(
        name="api",
        cert=FileResult(path="cert.pem", certs=(bad,)),
        key=FileResult(path="key.pem"),
        endpoint=endpoint,
        master=MasterState(pid=10**309, start_time=value, workers=(worker,), channel="control_socket"),
        drift=(AddressDrift("127.0.0.1", True, value),),
        last_reload=value,
    )
    return Snapshot(
        files=(FileResult(path="/etc/tls/a.pem", certs=(bad,)),),
        endpoints=(endpoint,),
        targets=(target,),
        scans=((ScanKind.FILES, ScanStats(duration_seconds=value, finished_at=value)),),
    )


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e300, -1e300], ids=repr)
def test_the_page_and_the_api_never_fail_on_an_absurd_number(pki: PKI, root: Issued, value: float) -> None:
    """Issue 25 item 2: uptime NaN or -1e300 made ``/`` answer 500 and the API emit a bare NaN."""
    snapshot = [_absurd(pki, root, value)]
    cache = RenderCache(snapshot=lambda: snapshot[-1], live=[CollectorRegistry()])
    app = App(exposition=cache, snapshot=lambda: snapshot[-1], probe=lambda _t, _n: ProbeOutcome(), reload=list)
    server = WebServer(app, addresses=["127.0.0.1:0"], auth=BasicAuth({}))
    server.start()
    url = f"http://127.0.0.1:{server.addresses[0][1]}"
    try:
        page_status, page = _get(url + "/")
        api_status, api = _get(url + "/api/v1/status")
    finally:
        server.stop()
    assert page_status == 200, page[:300]
    assert b"/etc/tls/a.pem" in page and b"invalid time" in page  # the rows are formatted, their times say so
    assert api_status == 200
    document = strict(api)
    assert isinstance(document, dict) and document["targets"][0]["name"] == "api"
    if not math.isfinite(value):
        assert document["targets"][0]["last_reload"] is None  # null for a number JSON can't hold


def test_a_row_that_cannot_be_formatted_says_so_and_the_api_writes_null() -> None:
    """A pid of 5,000 digits can't even be written as text (Python's int conversion limit): its row says it can't
    be shown, every other row is there, and the API writes null for it."""
    master = MasterState(pid=10**5000, start_time=1.0, channel="control_socket")
    endpoint = EndpointResult("127.0.0.1:8443", "")
    target = TargetState("api", FileResult("cert.pem"), FileResult("key.pem"), endpoint, master)
    snapshot = Snapshot(files=(FileResult(path="/etc/tls/a.pem", error=FileReason.NOT_FOUND),), targets=(target,))
    cache = RenderCache(snapshot=lambda: snapshot, live=[CollectorRegistry()])
    app = App(exposition=cache, snapshot=lambda: snapshot, probe=lambda _t, _n: ProbeOutcome(), reload=list)
    server = WebServer(app, addresses=["127.0.0.1:0"], auth=BasicAuth({}))
    server.start()
    url = f"http://127.0.0.1:{server.addresses[0][1]}"
    try:
        page_status, page = _get(url + "/")
        api_status, api = _get(url + "/api/v1/status")
    finally:
        server.stop()
    assert page_status == 200 and b"this row could not be shown: ValueError" in page and b"/etc/tls/a.pem" in page
    document = strict(api)
    assert api_status == 200 and isinstance(document, dict) and document["targets"][0]["master_pid"] is None


def _fake_master(tmp_path: Path, port: int, **answer: object) -> ControlServer:
    """A control socket served by this process (so the kernel names this pid as its listener) that says ``answer``
    in ``show stats``."""

    class Saying(ControlServer):
        def _answer(self, command: str) -> dict[str, object]:
            reply = dict(super()._answer(command))
            return {**reply, **answer} if command == "show stats" else reply

    return Saying(tmp_path / "ctl", pid=os.getpid(), port=port, started=time.time() - 3600)


def _exporter(run_exporter: StartExporter, tmp_path: Path, pki: PKI, root: Issued, port: int) -> RunningExporter:
    leaf = pki.leaf(root)
    (tmp_path / "cert.pem").write_bytes(leaf.cert_pem)
    (tmp_path / "key.pem").write_bytes(leaf.key_pem)
    (tmp_path / "watched.pem").write_bytes(pki.leaf(root).cert_pem)
    return run_exporter(
        f"files: [{{paths: ['{tmp_path}/watched.pem']}}]\n"
        "gunicorn:\n"
        f"  - {{name: api, cert_file: '{tmp_path}/cert.pem', key_file: '{tmp_path}/key.pem',"
        f" endpoint: '127.0.0.1:{port}', control_socket: '{tmp_path}/ctl', timeout: 1s}}\n"
    )


@pytest.mark.parametrize(
    "answer",
    [{"pid": 10**309}, {"uptime": math.nan}, {"uptime": -1e300}, {"uptime": 1e300}],
    ids=["pid 10**309", "uptime NaN", "uptime -1e300", "uptime 1e300"],
)
def test_an_absurd_master_leaves_metrics_fresh_the_page_up_and_the_api_strict(
    run_exporter: StartExporter, tmp_path: Path, pki: PKI, root: Issued, answer: dict[str, object]
) -> None:
    """Issue 25 items 1-2, as reported: a control socket saying absurd numbers froze /metrics (a renewed file never
    showed), answered 500 on ``/`` and NaN in the API. Now the file's renewal shows, ``/`` is 200, the API strict."""
    port = free_port()
    server = _fake_master(tmp_path, port, **answer)
    exporter = _exporter(run_exporter, tmp_path, pki, root, port)
    try:
        exporter.scan_now()
        renewed = pki.leaf(root)
        (tmp_path / "watched.pem").write_bytes(renewed.cert_pem)
        exporter.scan_now()
        fingerprint = f'fingerprint_sha256="{renewed.fingerprint}"'
        eventually(lambda: fingerprint in exporter.get("/metrics")[1].decode(), "the renewed file in /metrics")
        status, page = exporter.get("/")
        assert status == 200, page[:300]
        api_status, api = exporter.get("/api/v1/status")
        assert api_status == 200 and isinstance(strict(api), dict)
        assert exporter.metrics()['gunicorn_cert_exporter_render_errors_total{kind="gunicorn"}'] == 0.0
    finally:
        server.close()


def test_the_api_escapes_every_control_character_of_its_strings() -> None:
    """Issue 25 item 6: the API left DEL, C1 controls, U+2028 and bidi overrides raw in a file name."""
    hostile = "\r\x1b\x7f\x85\x9b\u2028\u2029\u200e\u202a\u202e\u2066\u2069"
    path = f"/etc/tls/{hostile}.pem"
    snapshot = Snapshot(files=(FileResult(path=path, error=FileReason.NOT_FOUND),))
    cache = RenderCache(snapshot=lambda: snapshot, live=[CollectorRegistry()])
    app = App(exposition=cache, snapshot=lambda: snapshot, probe=lambda _t, _n: ProbeOutcome(), reload=list)
    server = WebServer(app, addresses=["127.0.0.1:0"], auth=BasicAuth({}))
    server.start()
    try:
        status, api = _get(f"http://127.0.0.1:{server.addresses[0][1]}/api/v1/status")
    finally:
        server.stop()
    text = api.decode()
    assert status == 200 and not [c for c in text if c in hostile]  # only escapes on the wire
    document = strict(api)
    assert isinstance(document, dict) and document["sources"][0]["source"] == path  # the value itself is intact
