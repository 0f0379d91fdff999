"""sources/probe_process.py: the endpoints scan in a child process that dies, sticks or outlives nothing."""

from __future__ import annotations

import dataclasses
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import ClassVar

import pytest

from gunicorn_cert_exporter import config
from gunicorn_cert_exporter.config import EndpointConfig
from gunicorn_cert_exporter.model import AddressResult, EndpointReason, EndpointResult
from gunicorn_cert_exporter.scanning.scans import Scans
from gunicorn_cert_exporter.scanning.store import Store
from gunicorn_cert_exporter.sources import probe_child, probe_process
from gunicorn_cert_exporter.sources.endpoints import Prober
from gunicorn_cert_exporter.sources.probe_process import ProbeProcess
from gunicorn_cert_exporter.vocabulary import ScanKind
from tests.support import PKI, ExporterProcess, Issued, TLSServer, alive, children, eventually, server_context

pytestmark = pytest.mark.integration  # every test but one starts a probe process


@pytest.fixture
def probes() -> Iterator[ProbeProcess]:
    process = ProbeProcess()
    yield process
    process.close()


def _config(server: TLSServer, ca_file: str | None = None, timeout: float = 5.0) -> EndpointConfig:
    return EndpointConfig(address=server.address, server_name="localhost", ca_file=ca_file, timeout=timeout)


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


def test_a_child_killed_mid_scan_leaves_its_endpoints_down_where_they_were(
    probes: ProbeProcess, tls_server: type[TLSServer], pki: PKI, root: Issued
) -> None:
    flaky = tls_server("127.0.0.1", context=server_context((pki.leaf(root),)))
    never = tls_server("127.0.0.1", mode="stall")
    assert probes.probe_all([_config(flaky)], concurrency=4)[0].addresses[0].up
    first = probes.pid
    assert first is not None
    flaky.mode = "stall"
    answers: list[tuple[EndpointResult, ...]] = []
    configs = [_config(flaky, timeout=60), _config(never, timeout=60)]
    scan = threading.Thread(target=lambda: answers.append(probes.probe_all(configs, concurrency=4)))
    scan.start()
    eventually(lambda: (flaky._held and never._held) or None, "the child in both stalled handshakes", timeout=20)
    os.kill(first, signal.SIGKILL)
    scan.join(timeout=10)  # not the stalled endpoints' 60 s
    assert not scan.is_alive()
    kept, unknown = answers[0]
    assert kept.error == EndpointReason.SCAN_FAILED and [a.address for a in kept.addresses] == ["127.0.0.1"]
    assert not kept.addresses[0].up and kept.addresses[0].error == EndpointReason.SCAN_FAILED
    assert unknown.error == EndpointReason.SCAN_FAILED and unknown.addresses == ()  # no address known yet
    flaky.mode = "tls"
    assert probes.probe_all([_config(flaky)], concurrency=4)[0].addresses[0].up  # the next scan: a new child
    assert probes.pid not in (None, first)


def test_an_abandoned_scan_publishes_at_once_and_the_child_goes_on(
    probes: ProbeProcess, tls_server: type[TLSServer], pki: PKI, root: Issued
) -> None:
    """The watchdog's abandon is no reason to replace the child: the scan publishes, the probe goes on."""
    good = tls_server("127.0.0.1", context=server_context((pki.leaf(root),)))
    stalled = tls_server("127.0.0.1", mode="stall")
    assert probes.probe_all([_config(good)], concurrency=4)[0].addresses[0].up
    child = probes.pid
    answers: list[tuple[EndpointResult, ...]] = []
    stuck = threading.Thread(
        target=lambda: answers.append(probes.probe_all([_config(stalled, timeout=60)], concurrency=4))
    )
    stuck.start()
    eventually(lambda: stalled._held or None, "the child in the stalled handshake", timeout=20)
    probes.abandon()  # what the scheduler's watchdog does past the scan's deadline
    stuck.join(timeout=10)  # not the stalled endpoint's 60 s
    assert not stuck.is_alive() and answers[0][0].error == EndpointReason.SCAN_DEADLINE
    assert probes.probe_all([_config(good)], concurrency=4)[0].addresses[0].up
    assert probes.pid == child


def test_a_slow_endpoint_is_scan_deadline_with_its_last_chain_then_its_real_reason(
    probes: ProbeProcess, tls_server: type[TLSServer], pki: PKI, root: Issued
) -> None:
    good = tls_server("127.0.0.1", context=server_context((pki.leaf(root),)))
    flaky = tls_server("127.0.0.1", context=server_context((pki.leaf(root),)))
    first = probes.probe_all([_config(good), _config(flaky, timeout=3)], concurrency=4)
    assert all(r.addresses[0].up for r in first)
    child = probes.pid
    flaky.mode = "stall"  # it stops answering: never `up` again from the first scan that can't reach it
    # A deadline well inside the stalled probe's 3 s timeout: the probe can't have ended by then.
    late = probes.probe_all([_config(good), _config(flaky, timeout=3)], concurrency=4, deadline=time.monotonic() + 1)
    assert late[0].addresses[0].up
    (overdue,) = late[1].addresses
    assert overdue.error == EndpointReason.SCAN_DEADLINE and not overdue.up
    assert overdue.chain == first[1].addresses[0].chain  # its last certificates are kept
    then = probes.probe_all([_config(good), _config(flaky, timeout=3)], concurrency=4)
    assert then[1].addresses[0].error == EndpointReason.STALLED  # the probe the late scan left running, ended
    assert probes.pid == child  # a slow endpoint is no reason to replace the child


def test_black_holes_ahead_in_the_config_never_hold_back_the_healthy_endpoints(
    probes: ProbeProcess, tls_server: type[TLSServer], pki: PKI, root: Issued
) -> None:
    """40 endpoints that accept and never answer, listed first, at concurrency 4: the 3 healthy ones answer first."""
    hole = tls_server("127.0.0.1", mode="stall")
    healthy = [tls_server("127.0.0.1", context=server_context((pki.leaf(root),))) for _ in range(3)]
    holes = [EndpointConfig(address=hole.address, server_name=f"h{i}.test", timeout=3) for i in range(40)]
    configs = [*holes, *(_config(server, timeout=3) for server in healthy)]
    # The fleet needs 40 x 3 s / 4 = 30 s one at a time; this scan has 8 s, as at `interval: 10s`.
    first = probes.probe_all(configs, concurrency=4, deadline=time.monotonic() + 8)
    assert [bool(r.addresses) and all(a.up for a in r.addresses) for r in first[40:]] == [True] * 3
    reasons = {r.error or r.addresses[0].error for r in first[:40]}
    assert reasons <= {EndpointReason.SCAN_DEADLINE, EndpointReason.STALLED}
    child = probes.pid
    second = probes.probe_all(configs, concurrency=4)  # every hole probed by the end of this one
    assert {r.addresses[0].error for r in second[:40]} == {EndpointReason.STALLED}
    assert probes.pid == child


def test_a_child_that_stops_answering_is_replaced_and_its_endpoints_are_scan_failed(
    tls_server: type[TLSServer], pki: PKI, root: Issued
) -> None:
    good = tls_server("127.0.0.1", context=server_context((pki.leaf(root),)))
    probes = ProbeProcess(silence=2)
    try:
        assert probes.probe_all([_config(good)], concurrency=4)[0].addresses[0].up
        first = probes.pid
        assert first is not None
        os.kill(first, signal.SIGSTOP)  # no result, no heartbeat: stuck as a process can be
        # The deadline only keeps this test from hanging should the silence go unnoticed: it is far past 2 s.
        (silent,) = probes.probe_all([_config(good)], concurrency=4, deadline=time.monotonic() + 60)
        assert silent.error == EndpointReason.SCAN_FAILED and [a.address for a in silent.addresses] == ["127.0.0.1"]
        assert probes.probe_all([_config(good)], concurrency=4)[0].addresses[0].up
        assert probes.pid not in (None, first)
        eventually(lambda: not alive(first) or None, "the stopped child to be killed", timeout=10)
    finally:
        probes.close()


def test_a_child_slower_to_start_than_the_silence_is_not_replaced(
    tls_server: type[TLSServer], pki: PKI, root: Issued, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loaded machine may take longer than ``silence`` to import the child: killed then, the next one starts colder
    still, and a replacement loop never probes anything (seen under `pytest -n 2` with silence=2)."""
    good = tls_server("127.0.0.1", context=server_context((pki.leaf(root),)))
    slow = tmp_path / "slow-python"
    slow.write_text(f'#!/bin/sh\nsleep 3\nexec "{sys.executable}" "$@"\n')  # 3 s before the interpreter starts
    slow.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(slow))
    probes = ProbeProcess(silence=1)
    try:
        (answer,) = probes.probe_all([_config(good)], concurrency=4)
        assert answer.addresses[0].up
        child = probes.pid
        assert probes.probe_all([_config(good)], concurrency=4)[0].addresses[0].up
        assert probes.pid == child  # the same child: it was never taken for stuck
    finally:
        probes.close()


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


def test_a_bug_in_the_child_is_logged_there_and_its_endpoints_stay(
    probes: ProbeProcess, tls_server: type[TLSServer], pki: PKI, root: Issued, capfd: pytest.CaptureFixture[str]
) -> None:
    good = tls_server("127.0.0.1", context=server_context((pki.leaf(root),)))
    assert probes.probe_all([_config(good)], concurrency=4)[0].addresses[0].up
    child = probes.pid
    # Unvalidated, as only a bug could make it: the probe raises KeyError in the child.
    broken = EndpointConfig.model_construct(address=good.address, server_name="localhost", timeout=5.0, starttls="x")
    (failed,) = probes.probe_all([broken], concurrency=4)
    assert failed.error == EndpointReason.SCAN_FAILED and [a.address for a in failed.addresses] == ["127.0.0.1"]
    err = capfd.readouterr().err
    assert "endpoint probe failed in the probe process" in err and "KeyError" in err  # with its traceback
    assert probes.pid == child  # a bug is not a dead child


def test_a_message_this_side_cannot_read_is_logged_with_its_traceback_and_reading_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug is not a dead child: the reader logs it and reads the next message."""
    ours, theirs = socket.socketpair()
    child = object.__new__(probe_process._Child)  # only its reader, on a socket this test writes to
    child.connection, child.gone = Connection(ours.detach()), False
    child.process = types.SimpleNamespace(pid=0)  # type: ignore[assignment]  # only its pid is read
    got: list[object] = []
    child._on_message = lambda _child, message: got.append(message)
    sender = Connection(theirs.detach())
    sender.send_bytes(b"not a pickle")
    sender.send(("alive",))
    sender.close()
    child._read()
    assert got == [("alive",), None] and child.gone
    assert "unreadable message from the probe process" in caplog.text and "Traceback" in caplog.text


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


class _Answering:
    """A child that answers each request at once from 10.0.0.1, and keeps the requests it got."""

    requests: ClassVar[list[object]] = []

    def __init__(self, _log: tuple[str, str], on_message: Callable[[object, object], None]) -> None:
        self.process = types.SimpleNamespace(pid=0, poll=lambda: None)
        self.connection = types.SimpleNamespace(send=self._send)
        self._on_message = on_message

    def alive(self) -> bool:
        return True

    def end(self) -> bool:
        return True

    def _send(self, request: tuple[list[EndpointConfig], int, object]) -> None:
        self.requests.append(request)
        for asked in request[0]:
            result = EndpointResult(
                endpoint=asked.address, server_name=asked.sni or "", addresses=(AddressResult(address="10.0.0.1"),)
            )
            self._on_message(self, ("result", result))


def test_each_request_tells_the_child_where_the_endpoints_were(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe_process, "_Child", _Answering)
    monkeypatch.setattr(_Answering, "requests", [])
    probes = ProbeProcess()
    config = EndpointConfig(address="svc.example:443")
    probes.probe_all([config], concurrency=1)
    probes.probe_all([config], concurrency=1)  # e.g. to a new child that never saw the name resolve
    key = ("svc.example:443", "svc.example")
    assert _Answering.requests == [([config], 1, {}), ([config], 1, {key: ("10.0.0.1",)})]


def test_close_mid_scan_ends_the_child_at_once(probes: ProbeProcess, tls_server: type[TLSServer]) -> None:
    stalled = tls_server("127.0.0.1", mode="stall")
    scan = threading.Thread(target=probes.probe_all, args=([_config(stalled, timeout=60)],), kwargs={"concurrency": 1})
    scan.start()
    eventually(lambda: stalled._held or None, "the child in the stalled handshake", timeout=20)
    child = probes.pid
    assert child is not None
    started = time.monotonic()
    probes.close()
    assert time.monotonic() - started < 3  # not the stalled probe's 60 s: close() waits at most 1 s for the scan
    scan.join(timeout=5)
    assert not scan.is_alive() and not alive(child)


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


def test_serve_probes_in_a_child_it_replaces_when_killed_and_leaves_none_behind(
    tmp_path: Path, tls_server: type[TLSServer], pki: PKI, root: Issued
) -> None:
    server = tls_server("127.0.0.1", context=server_context((pki.leaf(root),)))
    config = tmp_path / "exporter.yaml"
    config.write_text(
        f"scan: {{interval: 1s, jitter: 0%}}\nendpoints: [{{address: '{server.address}', server_name: localhost}}]\n"
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


class _Held:
    """An endpoints prober whose scan waits for the watchdog's abandon, then returns what it has (all overdue)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.abandoned = threading.Event()

    def probe_all(
        self, configs: Sequence[EndpointConfig], *, concurrency: int, deadline: float
    ) -> tuple[EndpointResult, ...]:
        self.entered.set()
        self.abandoned.wait(30)
        return tuple(probe_process.overdue((c.address, c.sni or ""), None) for c in configs)

    def abandon(self) -> None:
        self.abandoned.set()


def test_the_watchdog_abandoning_an_endpoints_scan_lets_the_probe_process_publish() -> None:
    """Past its deadline the endpoints run is told to publish now, and still owns its kind: its results and its
    `last_scan` are published (before, the run was dropped and a slow fleet never had an endpoints scan)."""
    held, store = _Held(), Store()
    scans = Scans(config=config.load("endpoints: [{address: 'a.invalid:443'}]"), store=store, prober=Prober(),
                  endpoint_prober=held)  # fmt: skip
    run = threading.Thread(target=scans.scan_endpoints)
    run.start()
    try:
        assert held.entered.wait(30)
        scans.overrun(ScanKind.FILES)
        scans.overrun(ScanKind.ENDPOINTS, threading.get_ident())  # not the run's thread: a newer run owns the kind
        assert not held.abandoned.is_set()
        scans.overrun(ScanKind.ENDPOINTS, run.ident)  # what scanning/scheduler.py's watchdog calls past the deadline
        assert held.abandoned.is_set()
    finally:
        held.abandoned.set()
        run.join(30)
    (published,) = store.snapshot.endpoints
    assert (published.endpoint, published.error) == ("a.invalid:443", EndpointReason.SCAN_DEADLINE)
    assert ScanKind.ENDPOINTS in dict(store.snapshot.scans)


class _Unkillable:
    """A child stuck in the kernel (a hung mount): silent, and SIGKILL does not take effect."""

    def __init__(self, _log: tuple[str, str], _on_message: object) -> None:
        self.connection = types.SimpleNamespace(send=lambda _request: None, close=lambda: None)
        self.process = types.SimpleNamespace(pid=0, returncode=None, poll=lambda: None)
        self.heard = time.monotonic()
        self.spoke = True  # it started, then hung
        self.killed = False

    def alive(self) -> bool:
        return not self.killed

    def kill(self) -> None:
        self.killed = True

    def end(self) -> bool:
        self.kill()
        return False


def test_a_child_that_cannot_die_releases_its_scan_and_only_a_few_are_left_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(probe_process, "_Child", _Unkillable)
    probes = ProbeProcess(silence=0.2)
    config = EndpointConfig(address="127.0.0.1:1")
    for _ in range(probe_process._MAX_DYING):
        (failed,) = probes.probe_all([config], concurrency=1)  # silent: killed, and the scan lets go
        assert failed.error == EndpointReason.SCAN_FAILED
    (refused,) = probes.probe_all([config], concurrency=1)  # no fourth process while three have not exited
    assert refused.error == EndpointReason.SCAN_FAILED and refused.detail == "earlier probe processes did not exit"


def _endpoint_state(samples: dict[str, float], address: str, server_name: str) -> str:
    """'up', or the reason of the endpoint's (single-address) error, as /metrics says; '' if it has neither."""
    where = f'address="127.0.0.1",endpoint="{address}"'
    if samples.get(f'gunicorn_cert_endpoint_up{{{where},server_name="{server_name}"}}') == 1.0:
        return "up"
    found = [
        reason.value
        for reason in EndpointReason
        for ip in ("127.0.0.1", "")  # "": not probed yet, so no address known
        if samples.get(
            f'gunicorn_cert_endpoint_error{{address="{ip}",endpoint="{address}",reason="{reason.value}",'
            f'server_name="{server_name}"}}'
        )
    ]
    return found[0] if found else ""


def test_serve_publishes_a_fleet_slower_than_its_deadline_without_replacing_the_child(
    tmp_path: Path, tls_server: type[TLSServer], pki: PKI, root: Issued
) -> None:
    """Issue 24's fleet: 40 endpoints that accept and never answer, listed first, then 3 healthy ones and one that
    stops answering after the first scan; `timeout: 3s`, `concurrency: 4`, `interval: 10s`. One at a time the holes
    need 40 x 3 s / 4 = 30 s, and a scan has 8 s (the first one starts the probe process too)."""
    hole = tls_server("127.0.0.1", mode="stall")
    healthy = [tls_server("127.0.0.1", context=server_context((pki.leaf(root),))) for _ in range(3)]
    flaky = tls_server("127.0.0.1", context=server_context((pki.leaf(root),)))
    holes = [f"{{address: '{hole.address}', server_name: h{i}.test, timeout: 3s}}" for i in range(40)]
    good = [f"{{address: '{s.address}', server_name: localhost, timeout: 3s}}" for s in (*healthy, flaky)]
    config = tmp_path / "exporter.yaml"
    config.write_text(
        f"scan: {{interval: 10s, jitter: 0%, concurrency: 4}}\nendpoints: [{', '.join([*holes, *good])}]\n"
    )
    exporter = ExporterProcess(config, cwd=tmp_path)
    last_scan = 'gunicorn_cert_exporter_last_scan_timestamp_seconds{kind="endpoints"}'
    scans: list[dict[str, float]] = []  # /metrics as each endpoints scan published it

    def next_scan() -> dict[str, float]:
        def published() -> dict[str, float] | None:
            samples = exporter.metrics()
            seen = scans[-1][last_scan] if scans else None
            return samples if samples.get(last_scan) not in (None, seen) else None

        samples = eventually(published, f"endpoints scan {len(scans) + 1}", every=0.1)
        scans.append(samples)
        return samples

    try:
        first = next_scan()
        assert [_endpoint_state(first, s.address, "localhost") for s in (*healthy, flaky)] == ["up"] * 4
        flaky.mode = "stall"  # from the next scan on it can't be reached: it must never be `up` again
        for _ in range(3):
            next_scan()
    finally:
        exporter.stop()
    for samples in scans[1:]:
        assert [_endpoint_state(samples, s.address, "localhost") for s in healthy] == ["up"] * 3
        assert _endpoint_state(samples, flaky.address, "localhost") in ("scan_deadline", "stalled")
    for i in range(40):  # a hole: scan_deadline until its probe ends, stalled from then on
        states = [_endpoint_state(samples, hole.address, f"h{i}.test") for samples in scans]
        assert set(states) <= {"scan_deadline", "stalled"} and states[2] == "stalled", (i, states)
    assert all(s[last_scan] > p[last_scan] for p, s in itertools.pairwise(scans))
    log = exporter.log.read_text()
    assert log.count("probe process started") == 1  # no child replaced for being slow
    assert "overran its deadline" not in log


def test_the_next_scan_starts_with_what_the_last_one_did_not_reach() -> None:
    """The child queues each endpoint once: those still waiting from the last scan stay ahead of the others."""
    ours, theirs = socket.socketpair()
    worker = probe_child.Worker(Connection(ours.detach()), Prober())  # not dispatching: nothing leaves the queue
    a, b, c, d = (EndpointConfig(address=f"127.0.0.1:{port}") for port in (1001, 1002, 1003, 1004))
    worker.ask([a, b, c], 4, {})
    worker.ask([d, c, b, a], 4, {})  # the next scan, in another order, while a, b and c still wait
    assert list(worker._queue) == [a, b, c, d]
    theirs.close()


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
