"""The health check after a reload: one HTTPS GET through the endpoint, against a real Gunicorn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gunicorn_cert_exporter.sources.health import Expect, get_health
from tests.support import PKI, Gunicorn, Issued, TLSServer, write_pair

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gunicorn, Issued]]:
    pki = PKI()
    root = pki.ca("Health CA")
    directory = tmp_path_factory.mktemp("health")
    (directory / "ca.pem").write_bytes(root.cert_pem)
    write_pair(pki.leaf(root), directory / "cert.pem", directory / "key.pem")
    server = Gunicorn(directory, worker_class="sync", cert=directory / "cert.pem", key=directory / "key.pem", workers=1)
    try:
        yield server, root
    finally:
        server.stop()


def _get(server: Gunicorn, path: str, *, ca_file: str | None = None, timeout: float = 5.0) -> tuple[bool, int]:
    health = get_health(
        host="127.0.0.1", port=server.port, path=path, expect=Expect.parse("200-399"),
        server_name="localhost", ca_file=ca_file, timeout=timeout,
    )  # fmt: skip
    return health.healthy, health.status


def test_a_path_in_range_is_healthy_and_a_503_is_not(served: tuple[Gunicorn, Issued]) -> None:
    server, _ = served
    assert _get(server, "/healthz") == (True, 200)
    assert _get(server, "/status/503") == (False, 503)


def test_the_answer_is_verified_against_the_targets_ca(served: tuple[Gunicorn, Issued], tmp_path: Path) -> None:
    server, root = served
    (tmp_path / "ca.pem").write_bytes(root.cert_pem)
    assert _get(server, "/healthz", ca_file=str(tmp_path / "ca.pem")) == (True, 200)
    other = PKI().ca("Another CA")
    (tmp_path / "other.pem").write_bytes(other.cert_pem)
    assert _get(server, "/healthz", ca_file=str(tmp_path / "other.pem")) == (False, 0)


def test_a_server_that_never_answers_is_unhealthy_within_the_timeout() -> None:
    stalled = TLSServer("127.0.0.1", mode="stall")
    try:
        health = get_health(
            host="127.0.0.1", port=stalled.port, path="/healthz", expect=Expect(), server_name=None,
            ca_file=None, timeout=0.5,
        )  # fmt: skip
        assert not health.healthy and health.status == 0 and "timeout" in health.detail
    finally:
        stalled.close()


@pytest.mark.parametrize("text", ["abc", "99", "400-200", "200-700"])
def test_a_bad_expect_range_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="expect"):
        Expect.parse(text)
