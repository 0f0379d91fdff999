"""Fixtures: a certificate factory, loopback TLS servers and running exporters (the helpers live in tests/support/)."""

from __future__ import annotations

import _posixsubprocess
import os
import ssl
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acme_support import AcmeServer
from tests.revocation_support import Publisher
from tests.support import (
    DAY,
    ISSUING_CA,
    NOW,
    PKI,
    Chromium,
    Issued,
    RunningExporter,
    StartExporter,
    TLSServer,
    start_exporter,
)

_SPAWNERS = (
    (subprocess, "_fork_exec"),  # subprocess.Popen
    (_posixsubprocess, "fork_exec"),  # multiprocessing's spawn and forkserver
    (os, "posix_spawn"),  # subprocess.Popen where it may
    (os, "posix_spawnp"),
    (os, "fork"),  # multiprocessing's fork, as_nobody
)


@pytest.fixture(autouse=True)
def _processes_only_in_integration_tests(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Fail a test that starts a process without the ``integration`` marker: ``-m "not integration"`` stays fast.

    The process still starts (the test runs as written); the test fails at its end, naming what it started.
    """
    if request.node.get_closest_marker("integration") is not None:
        yield
        return
    started: list[str] = []

    def recording(name: str, real: Callable[..., object]) -> Callable[..., object]:
        def spawn(*args: object, **kwargs: object) -> object:
            started.append(f"{name}{args[:2]!r}"[:200])
            return real(*args, **kwargs)

        return spawn

    for module, name in _SPAWNERS:
        real = getattr(module, name, None)
        if real is not None:
            monkeypatch.setattr(module, name, recording(name, real))
    yield
    if started:
        pytest.fail(f"started a process without @pytest.mark.integration: {started[0]}", pytrace=False)


@pytest.fixture(scope="session")
def pki() -> PKI:
    return PKI()


@pytest.fixture(scope="session")
def root(pki: PKI) -> Issued:
    return pki.ca("Test Root CA")


@pytest.fixture(scope="session")
def intermediate(pki: PKI, root: Issued) -> Issued:
    return pki.issue("Test Intermediate CA", issuer=root, ca=True, not_after=NOW + 1000 * DAY)


@pytest.fixture
def ca() -> Issued:
    """A fresh issuing CA of its own for each test (revocation and ARI tests sign CRLs and leaves with it)."""
    return PKI().ca(ISSUING_CA)


@pytest.fixture
def publisher() -> Iterator[Publisher]:
    """A loopback HTTP server publishing what a test routes (CRLs, OCSP answers, issuer certificates)."""
    server = Publisher("127.0.0.1")
    yield server
    server.close()


@pytest.fixture
def acme() -> Iterator[AcmeServer]:
    """A loopback ACME server answering renewalInfo (ARI) as a test tells it."""
    server = AcmeServer("127.0.0.1")
    yield server
    server.close()


@pytest.fixture
def tls_server() -> Iterator[type[TLSServer]]:
    """Start TLS servers that are closed at the end of the test."""
    servers: list[TLSServer] = []

    class Factory(TLSServer):
        def __init__(
            self, host: str, *, mode: str = "tls", context: ssl.SSLContext | None = None, port: int = 0
        ) -> None:
            super().__init__(host, mode=mode, context=context, port=port)
            servers.append(self)

    yield Factory
    for server in servers:
        server.close()


@pytest.fixture
def run_exporter(tmp_path: Path) -> Iterator[StartExporter]:
    """Start exporters from config text; scans run when the test calls ``scan_now()`` (or on the scheduler)."""
    started: list[RunningExporter] = []

    def start(text: str, **options: Any) -> RunningExporter:
        path = tmp_path / f"config-{len(started)}.yaml"
        path.write_text(text)
        running = start_exporter(path, **options)
        started.append(running)
        return running

    yield start
    for running in started:
        running.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chromium]:
    """A headless Chromium driven over DevTools, stopped at the end of the test."""
    chromium = Chromium(tmp_path / "chromium-profile")
    yield chromium
    chromium.close()


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary directory with a short name: tables cut long cells, and config paths resolve against it."""
    with tempfile.TemporaryDirectory(prefix="g", dir="/tmp") as short:
        yield Path(short)
