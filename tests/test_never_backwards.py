"""Values that "never go backwards" (last reload, drift since) are clamped to now: one absurd reading can't stick."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest

from gunicorn_cert_exporter.config import GunicornTarget, ReloadConfig
from gunicorn_cert_exporter.model import AddressDrift, AddressResult, EndpointResult, clamp_to_now
from gunicorn_cert_exporter.reload import drift
from gunicorn_cert_exporter.reload.watcher import TargetWatcher
from gunicorn_cert_exporter.sources import certs
from gunicorn_cert_exporter.sources.endpoints import Prober
from gunicorn_cert_exporter.sources.files import FileScanner
from tests.support import PKI, ControlServer, Issued, free_port

NOW = 1_800_000_000.0


def test_clamp_to_now_keeps_past_times_and_caps_the_rest() -> None:
    assert clamp_to_now(NOW - 5, now=NOW) == NOW - 5
    assert clamp_to_now(1e300, now=NOW) == NOW
    assert clamp_to_now(math.inf, now=NOW) is None and clamp_to_now(math.nan, now=NOW) is None
    assert clamp_to_now(None, now=NOW) is None


def test_a_drift_remembered_as_beginning_in_the_future_began_now(pki: PKI, root: Issued) -> None:
    """A drift start carried over from a clock that was ahead (or a config reload) never stays in the future."""
    old, new = pki.leaf(root), pki.leaf(root)
    served = EndpointResult(
        endpoint="h:1", server_name="h", addresses=(AddressResult("127.0.0.1", chain=certs.parse(old.cert_pem).certs),)
    )
    file_leaf = certs.parse(new.cert_pem).certs[0]
    previous = (AddressDrift("127.0.0.1", True, 1e300),)
    assert drift.compare(endpoint=served, file_leaf=file_leaf, previous=previous, now=NOW)[0].since == NOW


@pytest.mark.parametrize("started", [1e300, math.nan], ids=["uptime -1e300", "uptime NaN"])
def test_an_absurd_uptime_never_leaves_last_reload_in_the_future(
    tmp_path: Path, pki: PKI, root: Issued, started: float
) -> None:
    """Issue 25 item 2: a master that says uptime -1e300 made last reload 1e300, kept for good since it "never goes
    backwards"; NaN made it NaN. Both stay at most now, and stay so once the master answers sanely again."""
    leaf = pki.leaf(root)
    (tmp_path / "cert.pem").write_bytes(leaf.cert_pem)
    (tmp_path / "key.pem").write_bytes(leaf.key_pem)
    port = free_port()
    server = ControlServer(tmp_path / "ctl", pid=os.getpid(), port=port, started=time.time() + started)
    target = GunicornTarget(
        name="api",
        cert_file=str(tmp_path / "cert.pem"),
        key_file=str(tmp_path / "key.pem"),
        endpoint=f"127.0.0.1:{port}",
        control_socket=str(tmp_path / "ctl"),
        timeout=1.0,
        reload=ReloadConfig(enabled=False),
    )
    watcher = TargetWatcher(prober=Prober(), scanner=FileScanner(clock=time.time, max_size=1 << 20))
    try:
        absurd = watcher.scan([target])[0]
        assert absurd.last_reload is None or absurd.last_reload <= time.time()
        server.started = time.time() - 3600  # the master answers sanely again
        sane = watcher.scan([target])[0]
    finally:
        server.close()
    assert sane.master.up and sane.last_reload is not None and sane.last_reload <= time.time()
