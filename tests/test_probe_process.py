"""sources/probe_process.py: the endpoints scan in a child process that dies, sticks or outlives nothing."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from gunicorn_cert_exporter import config
from gunicorn_cert_exporter.config import EndpointConfig
from gunicorn_cert_exporter.model import AddressResult, EndpointReason, EndpointResult
from gunicorn_cert_exporter.scanning.scans import Scans
from gunicorn_cert_exporter.scanning.store import Store
from gunicorn_cert_exporter.sources import probe_process
from gunicorn_cert_exporter.sources.endpoints import Prober
from gunicorn_cert_exporter.sources.probe_process import ProbeProcess
from gunicorn_cert_exporter.vocabulary import ScanKind
from tests.support import PKI, ExporterProcess, Issued, TLSServer, alive, children, eventually, server_context
from tests.support.waiting import finishes


@pytest.fixture
def probes() -> Iterator[ProbeProcess]:
    process = ProbeProcess()
    yield process
    process.close()


def _config(server: TLSServer, ca_file: str | None = None, timeout: float = 5.0) -> EndpointConfig:
    return EndpointConfig(address=server.address, server_name="localhost", ca_file=ca_file, timeout=timeout)


@pytest.mark.integration
def test_the_child_reports_what_the_prober_in_this_process_reports(
    probes: ProbeProcess, tls_server: type[TLSServer], pki: PKI, root: Issued, intermediate: Issued, tmp_path: Path
) -> None:
    (tmp_path / "ca.pem").write_bytes(root.cert_pem)
    server = tls_server("127.0.0.1", context=server_context((pki.leaf(intermediate), intermediate)))
    config = _config(server, ca_file=str(tmp_path / "ca.pem"))
    here = Prober().probe_all([config], concurrency=4)
    there = probes.probe_all([config], concurrency=4)
    assert probes.pid is not None and probes.pid != os.getpid()

    def timeless(results: tuple[EndpointResult, ...]) -> list[EndpointResult]:
        return [
            dataclasses.replace(r, addresses=tuple(dataclasses.replace(a, handshake_seconds=0.0) for a in r.addresses))
            for r in results
        ]

    assert timeless(there) == timeless(here)
    assert there[0].addresses[0].verified and len(there[0].addresses[0].chain) == 2


@pytest.mark.integration
def test_a_child_killed_mid_scan_leaves_its_endpoints_down_where_they_were(
    probes: ProbeProcess, tls_server: type[TLSServer], pki: PKI, root: Issued
) -> None:
    good = tls_server("127.0.0.1", context=server_context((pki.leaf(root),)))
    stalled = tls_server("127.0.0.1", mode="stall")
    assert probes.probe_all([_config(good)], concurrency=4)[0].addresses[0].up
    first = probes.pid
    assert first is not None
    answers: list[tuple[EndpointResult, ...]] = []
    scan = threading.Thread(
        target=lambda: answers.append(probes.probe_all([_config(good), _config(stalled, timeout=600)], concurrency=4))
    )
    scan.start()
    eventually(lambda: stalled.held, "the child in the stalled handshake")
    os.kill(first, signal.SIGKILL)
    scan.join(timeout=60)  # far below the stalled endpoint's 10 minutes
    assert not scan.is_alive()
    kept, never = answers[0]
    assert kept.error == EndpointReason.SCAN_FAILED and [a.address for a in kept.addresses] == ["127.0.0.1"]
    assert not kept.addresses[0].up and kept.addresses[0].error == EndpointReason.SCAN_FAILED
    assert never.error == EndpointReason.SCAN_FAILED and never.addresses == ()  # no address known yet
    assert probes.probe_all([_config(good)], concurrency=4)[0].addresses[0].up  # the next scan: a new child
    assert probes.pid not in (None, first)


@pytest.mark.integration
def test_an_abandoned_scan_lets_go_of_the_child_and_the_next_scan_starts_a_new_one(
    probes: ProbeProcess, tls_server: type[TLSServer], pki: PKI, root: Issued
) -> None:
    good = tls_server("127.0.0.1", context=server_context((pki.leaf(root),)))
    stalled = tls_server("127.0.0.1", mode="stall")
    answers: list[tuple[EndpointResult, ...]] = []
    stuck = threading.Thread(
        target=lambda: answers.append(probes.probe_all([_config(stalled, timeout=60)], concurrency=4))
    )
    stuck.start()
    eventually(lambda: stalled._held or None, "the child in the stalled handshake", timeout=20)
    first = probes.pid
    probes.abandon()  # what the scheduler's watchdog does past the scan's deadline
    stuck.join(timeout=10)  # not the stalled endpoint's 60 s
    assert not stuck.is_alive() and answers[0][0].error == EndpointReason.SCAN_FAILED
    assert probes.probe_all([_config(good)], concurrency=4)[0].addresses[0].up
    assert probes.pid not in (None, first)


@pytest.mark.integration
def test_a_later_scan_waits_for_a_healthy_one_instead_of_killing_the_child(
    probes: ProbeProcess, tls_server: type[TLSServer], pki: PKI, root: Issued
) -> None:
    """After a config reload the new scan may start while the old one still probes: the child is kept."""
    good = tls_server("127.0.0.1", context=server_context((pki.leaf(root),)))
    slow = tls_server("127.0.0.1", mode="stall")
    assert probes.probe_all([_config(good)], concurrency=4)[0].addresses[0].up
    child = probes.pid
    answers: list[tuple[EndpointResult, ...]] = []
    old = threading.Thread(target=lambda: answers.append(probes.probe_all([_config(slow, timeout=2)], concurrency=4)))
    old.start()
    eventually(lambda: slow._held or None, "the old scan in its slow handshake", timeout=20)
    assert probes.probe_all([_config(good)], concurrency=4)[0].addresses[0].up
    old.join(timeout=10)
    assert answers[0][0].addresses[0].error == EndpointReason.STALLED  # the old scan finished, it was not killed
    assert probes.pid == child


@pytest.mark.integration
def test_a_bug_in_the_child_is_logged_there_and_its_endpoints_stay(
    probes: ProbeProcess, tls_server: type[TLSServer], pki: PKI, root: Issued, capfd: pytest.CaptureFixture[str]
) -> None:
    good = tls_server("127.0.0.1", context=server_context((pki.leaf(root),)))
    assert probes.probe_all([_config(good)], concurrency=4)[0].addresses[0].up
    broken = probes.probe_all([_config(good)], concurrency=0)  # ThreadPoolExecutor refuses 0 workers in the child
    assert broken[0].error == EndpointReason.SCAN_FAILED and [a.address for a in broken[0].addresses] == ["127.0.0.1"]
    err = capfd.readouterr().err
    assert "endpoints scan failed in the probe process" in err and "ValueError" in err  # with its traceback


def test_a_prober_seeded_with_known_addresses_keeps_them_while_the_name_fails() -> None:
    """What a new probe process is told: where the exporter last saw each endpoint (its own memory is empty)."""
    config = EndpointConfig(address="svc.example:443")
    key = ("svc.example:443", "svc.example")

    def failing(_host: str, _port: int) -> list[tuple[int, str]]:
        raise OSError("Name or service not known")

    prober = Prober(resolver=failing)
    prober.track([config], known={key: ("10.0.0.1",), ("gone.example:443", "gone.example"): ("10.0.0.2",)})
    (failed,) = prober.probe_all([config], concurrency=1)
    assert failed.error == EndpointReason.DNS_FAILURE
    assert [(a.address, a.error) for a in failed.addresses] == [("10.0.0.1", EndpointReason.DNS_FAILURE)]
    prober.track([config])  # what it knows itself stays; an endpoint outside the config is never remembered
    assert [a.address for a in prober.probe_all([config], concurrency=1)[0].addresses] == ["10.0.0.1"]
    assert ("gone.example:443", "gone.example") not in prober._last_resolved


@pytest.mark.integration
def test_each_request_tells_the_child_where_the_endpoints_were(monkeypatch: pytest.MonkeyPatch) -> None:
    key = ("svc.example:443", "svc.example")
    requests: list[object] = []
    answer = (EndpointResult(endpoint=key[0], server_name=key[1], addresses=(AddressResult(address="10.0.0.1"),)),)

    def exchange(_child: object, request: object) -> object:
        requests.append(request)
        return answer

    monkeypatch.setattr(probe_process, "_exchange", exchange)
    monkeypatch.setattr(probe_process, "_Child", _FakeChild)
    probes = ProbeProcess()
    config = EndpointConfig(address=key[0])
    probes.probe_all([config], concurrency=1)
    probes.probe_all([config], concurrency=1)  # e.g. to a new child that never saw the name resolve
    assert requests == [([config], 1, {}), ([config], 1, {key: ("10.0.0.1",)})]


class _FakeChild:
    def __init__(self, _log: tuple[str, str]) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", "pass"])

    def alive(self) -> bool:
        return True

    def end(self) -> bool:
        return True


@pytest.mark.integration
def test_close_mid_scan_ends_the_child_at_once(probes: ProbeProcess, tls_server: type[TLSServer]) -> None:
    stalled = tls_server("127.0.0.1", mode="stall")
    # The stalled probe would last 10 minutes: close() returning at all proves it did not wait for the scan.
    scan = threading.Thread(target=probes.probe_all, args=([_config(stalled, timeout=600)],), kwargs={"concurrency": 1})
    scan.start()
    eventually(lambda: stalled.held, "the child in the stalled handshake", timeout=20)
    child = probes.pid
    assert child is not None
    finishes(probes.close, "close() mid-scan")
    scan.join(timeout=30)
    assert not scan.is_alive() and not alive(child)


@pytest.mark.integration
def test_the_child_ends_when_the_exporter_dies_without_closing_it(
    tls_server: type[TLSServer], pki: PKI, root: Issued
) -> None:
    good = tls_server("127.0.0.1", context=server_context((pki.leaf(root),)))
    code = (
        "import os, sys\n"
        "from gunicorn_cert_exporter.config import EndpointConfig\n"
        "from gunicorn_cert_exporter.sources.probe_process import ProbeProcess\n"
        "p = ProbeProcess()\n"
        f"assert p.probe_all([EndpointConfig(address='{good.address}', server_name='localhost')], concurrency=1)\n"
        "print(p.pid, flush=True)\n"
        "os._exit(0)\n"  # no close(), no atexit: as after SIGKILL
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    child = int(done.stdout.split()[0])
    eventually(lambda: not alive(child) or None, "the orphaned child to exit", timeout=10)


@pytest.mark.integration
def test_the_child_ends_when_the_exporter_dies_in_the_middle_of_a_scan(tls_server: type[TLSServer]) -> None:
    stalled = tls_server("127.0.0.1", mode="stall")
    code = (
        "import os, sys, threading, time\n"
        "from gunicorn_cert_exporter.config import EndpointConfig\n"
        "from gunicorn_cert_exporter.sources.probe_process import ProbeProcess\n"
        "p = ProbeProcess()\n"
        f"config = EndpointConfig(address='{stalled.address}', timeout=120)\n"
        "threading.Thread(target=p.probe_all, args=([config],), kwargs={'concurrency': 1}, daemon=True).start()\n"
        "while p.pid is None: time.sleep(0.05)\n"
        "print(p.pid, flush=True)\n"
        "sys.stdin.readline()\n"
        "os._exit(0)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None and parent.stdin is not None
    child = int(parent.stdout.readline())
    eventually(lambda: stalled._held or None, "the child in the stalled handshake", timeout=20)
    parent.stdin.write("\n")
    parent.stdin.flush()
    parent.wait(timeout=10)
    eventually(lambda: not alive(child) or None, "the orphaned child to exit mid-scan", timeout=5)


@pytest.mark.integration
def test_serve_probes_in_a_child_it_replaces_when_killed_and_leaves_none_behind(
    tmp_path: Path, tls_server: type[TLSServer], pki: PKI, root: Issued
) -> None:
    server = tls_server("127.0.0.1", context=server_context((pki.leaf(root),)))
    config = tmp_path / "exporter.yaml"
    # 5 s, not 1 s: the scan's deadline is its interval, and under load a new child's start-up alone took over 1 s,
    # so every scan killed the child it was waiting for (55 restarts, no probe, in a minute).
    config.write_text(
        f"scan: {{interval: 5s, jitter: 0%}}\nendpoints: [{{address: '{server.address}', server_name: localhost}}]\n"
    )
    exporter = ExporterProcess(config, cwd=tmp_path)
    up = f'gunicorn_cert_endpoint_up{{address="127.0.0.1",endpoint="{server.address}",server_name="localhost"}}'
    try:
        eventually(lambda: exporter.metrics().get(up) == 1.0 or None, "the endpoint probed")
        (first,) = eventually(lambda: children(exporter.process.pid), "the probe process")
        os.kill(first, signal.SIGKILL)
        second = eventually(lambda: [c for c in children(exporter.process.pid) if c != first], "a new probe process")
        eventually(lambda: exporter.metrics().get(up) == 1.0 or None, "the endpoint probed again")
        assert exporter.metrics()[up] == 1.0  # the series never left
    finally:
        exporter.stop()
    assert exporter.process.returncode == 0
    eventually(lambda: not any(alive(c) for c in second) or None, "the probe process to end with serve", timeout=10)


class _Recorder(Prober):
    def __init__(self) -> None:
        super().__init__()
        self.abandoned = 0

    def abandon(self) -> None:
        self.abandoned += 1


def test_the_watchdog_abandoning_an_endpoints_scan_abandons_its_probes() -> None:
    recorder = _Recorder()
    scans = Scans(config=config.load("endpoints: [{address: 'a.invalid:443'}]"), store=Store(), prober=Prober(),
                  endpoint_prober=recorder)  # fmt: skip
    scans.overrun(ScanKind.FILES)
    assert recorder.abandoned == 0
    scans.overrun(ScanKind.ENDPOINTS)  # what scanning/scheduler.py's watchdog calls past the deadline
    assert recorder.abandoned == 1


class _Unkillable:
    """A child stuck in the kernel (a hung mount): SIGKILL does not take effect, it never answers."""

    def __init__(self, _log: tuple[str, str]) -> None:
        ours, self._theirs = socket.socketpair()
        self.connection = Connection(ours.detach())
        self.process = types.SimpleNamespace(pid=0, returncode=None)
        self.killed_at: float | None = None

    def alive(self) -> bool:
        return True

    def kill(self) -> None:
        self.killed_at = self.killed_at or time.monotonic()

    def end(self) -> bool:
        self.kill()
        self.connection.close()
        return False


def test_a_child_that_cannot_die_releases_its_scan_and_only_a_few_are_left_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(probe_process, "_Child", _Unkillable)
    monkeypatch.setattr(probe_process, "_KILL_GRACE", 0.5)
    probes = ProbeProcess()
    config = EndpointConfig(address="127.0.0.1:1")
    for _ in range(probe_process._MAX_DYING):
        answers: list[tuple[EndpointResult, ...]] = []
        scan = threading.Thread(target=lambda out=answers: out.append(probes.probe_all([config], concurrency=1)))
        scan.start()
        eventually(lambda: probes._child or None, "the scan talking to its child", timeout=5, every=0.05)
        probes.abandon()  # the watchdog, past the deadline
        scan.join(timeout=5)  # the stuck child does not hold the scan (nor the next ones) forever
        assert not scan.is_alive() and answers[0][0].error == EndpointReason.SCAN_FAILED
    (refused,) = probes.probe_all([config], concurrency=1)  # no fourth process while three have not exited
    assert refused.error == EndpointReason.SCAN_FAILED and refused.detail == "earlier probe processes did not exit"


@pytest.mark.integration
def test_a_child_killed_between_scans_is_reaped_at_once_not_at_the_next_scan(
    probes: ProbeProcess, tls_server: type[TLSServer], pki: PKI, root: Issued
) -> None:
    """Issue 25, smaller item: a killed probe child stayed a zombie until the next scan looked at it."""
    good = tls_server("127.0.0.1", context=server_context((pki.leaf(root),)))
    assert probes.probe_all([_config(good)], concurrency=4)[0].addresses[0].up
    child = probes.pid
    assert child is not None
    os.kill(child, signal.SIGKILL)
    # No scan runs meanwhile: the entry in /proc goes only once the exporter has reaped its child.
    eventually(lambda: not Path(f"/proc/{child}").exists(), "the killed child to be reaped", timeout=10)
