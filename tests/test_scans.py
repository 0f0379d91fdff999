"""scanning/scans.py: what a scan tells at load about a config it can't scan within its deadline."""

from __future__ import annotations

import logging

import pytest

from gunicorn_cert_exporter import config
from gunicorn_cert_exporter.scanning.scans import Scans
from gunicorn_cert_exporter.scanning.store import Store
from gunicorn_cert_exporter.sources.endpoints import Prober


def test_a_timeout_longer_than_the_scan_deadline_is_accepted_with_a_warning_naming_both(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loaded = config.load(
        "scan: {interval: 2s}\n"
        "endpoints: [{address: 'slow.test:443', timeout: 5s}, {address: 'quick.test:443', timeout: 1s}]\n"
        "gunicorn: [{name: api, cert_file: c.pem, key_file: k.pem, endpoint: '127.0.0.1:8443', pid: 2, timeout: 3s}]\n"
    )
    with caplog.at_level(logging.WARNING):
        Scans(config=loaded, store=Store(), prober=Prober())
    warned = [r for r in caplog.records if "longer than the scan deadline" in r.getMessage()]
    assert [(r.source, r.timeout_seconds, r.deadline_seconds) for r in warned] == [  # type: ignore[attr-defined]
        ("endpoint slow.test:443", 5.0, 1.6),
        ("gunicorn api", 3.0, 1.6),
    ]
