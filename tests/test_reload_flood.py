"""A flood of config reloads (POST /-/reload, SIGHUP) against a real `serve` process: threads and memory stay flat.

Issue 25: 1,000 reloads cost 2,243 threads and 460 MB (a watchdog timer per scan launch, every reload applied and
launching every kind), and 20,000 SIGHUPs 527 threads (a thread per signal). Reloads are now applied at most once
a second, the rest coalesced; the scheduler has one watchdog thread per scan kind.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import PKI, ExporterProcess, Issued, TLSServer, eventually, server_context

pytestmark = pytest.mark.integration

MAX_THREADS = 50
MAX_RSS_GROWTH = 30 * 1024 * 1024


def _status(pid: int, field: str) -> int:
    """Read one number of /proc/PID/status (``Threads``, or ``VmRSS`` in bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == field:
            number = int(value.split()[0])
            return number * 1024 if value.strip().endswith("kB") else number
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _post_reload(url: str) -> int:
    request = urllib.request.Request(url + "/-/reload", method="POST", data=b"")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def serving(tmp_path: Path, pki: PKI, root: Issued, tls_server: type[TLSServer]) -> Iterator[ExporterProcess]:
    """A `serve` process scanning a directory of certificates and a live TLS endpoint, its first scans done."""
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "a.pem").write_bytes(root.cert_pem)
    endpoint = tls_server("127.0.0.1", context=server_context((pki.leaf(root),)))
    config = tmp_path / "config.yaml"
    config.write_text(f"files: [{{paths: ['{certs}/*.pem']}}]\nendpoints: [{{address: '{endpoint.address}'}}]\n")
    exporter = ExporterProcess(config, cwd=tmp_path)
    try:
        eventually(lambda: _scanned(exporter, "files") and _scanned(exporter, "endpoints"), "the first scans")
        yield exporter
    finally:
        exporter.stop()


def _scanned(exporter: ExporterProcess, kind: str) -> float:
    return exporter.metrics().get(f'gunicorn_cert_exporter_last_scan_timestamp_seconds{{kind="{kind}"}}', 0.0)


def _applied(exporter: ExporterProcess) -> int:
    """Count the config reloads the exporter applied (its log says each)."""
    return exporter.log.read_text().count('msg="config reloaded"')


def _fresh_scan_after_the_flood(exporter: ExporterProcess, tmp_path: Path, root: Issued) -> None:
    """A certificate added after the flood is scanned and served: the exporter still works, not only answers."""
    (tmp_path / "certs" / "added.pem").write_bytes(root.cert_pem)
    added = f'gunicorn_cert_file_up{{path="{tmp_path}/certs/added.pem"}}'
    # Applied now (200) or coalesced into the next reload, a second later (429): either way its scans run at once.
    assert _post_reload(exporter.url) in (200, 429)
    eventually(lambda: exporter.metrics().get(added) == 1, "the certificate added after the flood")


def test_a_thousand_reloads_in_a_minute_keep_threads_and_memory_flat(
    serving: ExporterProcess, tmp_path: Path, root: Issued
) -> None:
    pid = serving.process.pid
    before = _status(pid, "VmRSS"), _status(pid, "Threads")
    started, statuses, most_threads = time.monotonic(), {200: 0, 429: 0}, 0
    for i in range(1000):
        # Paced over 50 s, as a script looping on reloads would: about 50 are applied, each launching every scan.
        time.sleep(max(0.0, started + i * 0.05 - time.monotonic()))
        status = _post_reload(serving.url)
        statuses[status] = statuses.get(status, 0) + 1
        most_threads = max(most_threads, _status(pid, "Threads"))
    after = _status(pid, "VmRSS"), _status(pid, "Threads")
    print(f"RSS {before[0] >> 20} -> {after[0] >> 20} MiB, threads {before[1]} -> {after[1]} (most {most_threads}),"
          f" answers {statuses}")  # fmt: skip
    # At most one reload a second is applied, and enough were (about 50) for every bound below to be tested.
    assert 10 <= _applied(serving) <= time.monotonic() - started + 2
    assert statuses[429] >= 900  # the rest coalesced
    coalesced = serving.metrics()["gunicorn_cert_exporter_config_reloads_coalesced_total{}"]
    assert coalesced >= statuses[429]
    assert most_threads < MAX_THREADS
    assert after[0] - before[0] < MAX_RSS_GROWTH
    _fresh_scan_after_the_flood(serving, tmp_path, root)


def test_twenty_thousand_sighups_keep_threads_flat_and_apply_a_reload(
    serving: ExporterProcess, tmp_path: Path, root: Issued
) -> None:
    pid = serving.process.pid
    reloaded_at = "gunicorn_cert_exporter_config_last_reload_success_timestamp_seconds{}"
    first = serving.metrics()[reloaded_at]
    threads_before, most_threads, started = _status(pid, "Threads"), 0, time.monotonic()
    for i in range(20_000):
        if i % 100 == 0:  # about 20 s in all: one signal a millisecond
            time.sleep(max(0.0, started + i * 0.001 - time.monotonic()))
            most_threads = max(most_threads, _status(pid, "Threads"))
        os.kill(pid, signal.SIGHUP)
    print(f"threads {threads_before} -> {_status(pid, 'Threads')} (most {most_threads})")
    assert most_threads < MAX_THREADS
    eventually(lambda: serving.metrics()[reloaded_at] > first, "a reload applied for the signals")
    assert serving.metrics()["gunicorn_cert_exporter_config_reloads_coalesced_total{}"] > 0
    assert _applied(serving) <= time.monotonic() - started + 2
    assert serving.process.poll() is None
    _fresh_scan_after_the_flood(serving, tmp_path, root)
