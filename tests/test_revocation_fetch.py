"""Revocation fetched from the leaves' own pointers: CRL Distribution Points and OCSP responders on loopback.

A real CA made at test time publishes CRLs and OCSP answers (built with cryptography) from an HTTP server on
127.0.0.1; the exporter is wired as ``serve`` wires it, with ``allow: ["127.0.0.1"]``.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509

from gunicorn_cert_exporter.config import load as load_config
from gunicorn_cert_exporter.model import Snapshot
from gunicorn_cert_exporter.scanning.revocation_pool import RevocationPool
from gunicorn_cert_exporter.scanning.scheduler import MAX_ABANDONED
from gunicorn_cert_exporter.scanning.store import Store
from gunicorn_cert_exporter.sources.files import FileScanner, Wanted
from gunicorn_cert_exporter.vocabulary import ScanKind
from tests.revocation_support import (
    HOUR,
    REASON,
    Publisher,
    config,
    crl_der,
    files_of,
    leaf,
    one,
    rows,
    samples,
    serve,
    utc_now,
)
from tests.support import (
    ISSUING_CA,
    PKI,
    Issued,
    TLSServer,
    eventually,
    server_context,
    start_exporter,
)


def test_a_revoked_leaf_in_a_file_is_revoked_with_reason_and_an_unrevoked_one_good(
    tmp_path: Path, publisher: Publisher, ca: Issued
) -> None:
    url = publisher.url("/ca.crl")
    bad, fine = leaf(ca, "bad.test", crl=url), leaf(ca, "fine.test", crl=url)
    publisher.route("/ca.crl", crl_der(ca, revoked={bad.cert.serial_number: REASON}))
    exporter = serve(tmp_path, ca, ("bad", bad), ("fine", fine))
    try:
        revoked = samples(exporter, "gunicorn_cert_revoked")
        assert one(revoked, "bad.pem") == 1.0
        assert one(revoked, "fine.pem") == 0.0
        status = samples(exporter, "gunicorn_cert_revocation_status")
        assert one(status, "bad.pem", 'method="crl"', 'status="revoked"', 'reason="key_compromise"') == 1.0
        assert one(status, "fine.pem", 'method="crl"', 'status="good"') == 1.0
        assert one(samples(exporter, "gunicorn_cert_revocation_time_seconds"), "bad.pem") > 0
        assert one(samples(exporter, "gunicorn_cert_crl_next_update_timestamp_seconds"), url) > 0
        assert publisher.asked("/ca.crl") == 1  # one CRL shared by both leaves: fetched once
        found = rows(exporter)
        assert found["bad.test"]["band"] == "critical"
        assert "key_compromise" in str(found["bad.test"]["note"]) and url in str(found["bad.test"]["note"])
        assert found["fine.test"]["band"] != "critical"
    finally:
        exporter.close()


def test_a_crl_signed_by_another_key_is_bad_signature_never_good_or_revoked(
    tmp_path: Path, publisher: Publisher, ca: Issued
) -> None:
    url = publisher.url("/ca.crl")
    bad = leaf(ca, "bad.test", crl=url)
    impostor = PKI().ca(ISSUING_CA)  # the same name, another key
    publisher.route("/ca.crl", crl_der(ca, revoked={bad.cert.serial_number: REASON}, signer=impostor))
    exporter = serve(tmp_path, ca, ("bad", bad))
    try:
        assert samples(exporter, "gunicorn_cert_revoked") == {}
        assert one(samples(exporter, "gunicorn_cert_crl_error"), url, 'reason="bad_signature"') == 1.0
        status = samples(exporter, "gunicorn_cert_revocation_status")
        assert one(status, 'status="unknown"', 'reason="bad_signature"') == 1.0
        assert rows(exporter)["bad.test"]["band"] != "critical"
    finally:
        exporter.close()


def test_a_crl_past_its_next_update_is_stale_and_answers_nothing(
    tmp_path: Path, publisher: Publisher, ca: Issued
) -> None:
    url = publisher.url("/old.crl")
    bad = leaf(ca, "bad.test", crl=url)
    publisher.route("/old.crl", crl_der(ca, revoked={bad.cert.serial_number: REASON}, next_update=utc_now() - HOUR))
    exporter = serve(tmp_path, ca, ("bad", bad))
    try:
        assert samples(exporter, "gunicorn_cert_revoked") == {}
        assert one(samples(exporter, "gunicorn_cert_crl_error"), url, 'reason="stale"') == 1.0
        assert one(samples(exporter, "gunicorn_cert_revocation_status"), 'status="unknown"', 'reason="stale"') == 1
    finally:
        exporter.close()


def test_a_50_mb_crl_is_refused_as_too_large(tmp_path: Path, publisher: Publisher, ca: Issued) -> None:
    url = publisher.url("/huge.crl")
    publisher.route("/huge.crl", b"\x30" * (50 * 1000 * 1000))
    exporter = serve(tmp_path, ca, ("big", leaf(ca, "big.test", crl=url)), max_crl_size="20MiB")
    try:
        assert one(samples(exporter, "gunicorn_cert_crl_error"), url, 'reason="too_large"') == 1.0
        assert samples(exporter, "gunicorn_cert_revoked") == {}
    finally:
        exporter.close()


def test_a_redirect_to_an_address_not_allowed_is_refused_without_a_connection(
    tmp_path: Path, publisher: Publisher, ca: Issued
) -> None:
    """127.0.0.2 is loopback (never global) and ``allow`` lists only 127.0.0.1: as a private address would be."""
    hidden = Publisher("127.0.0.2")
    try:
        hidden.route("/ca.crl", crl_der(ca))
        url = publisher.url("/moved.crl")
        publisher.route("/moved.crl", lambda _body: (302, b"", {"Location": hidden.url("/ca.crl")}))
        exporter = serve(tmp_path, ca, ("moved", leaf(ca, "moved.test", crl=url)))
        try:
            assert one(samples(exporter, "gunicorn_cert_crl_error"), url, 'reason="refused_address"') == 1.0
            assert publisher.asked("/moved.crl") == 1  # the redirect was followed as far as the check
            assert hidden.connections == 0
        finally:
            exporter.close()
    finally:
        hidden.close()


def test_a_distribution_point_on_an_unlisted_address_is_never_contacted(
    tmp_path: Path, publisher: Publisher, ca: Issued
) -> None:
    url = publisher.url("/ca.crl")
    publisher.route("/ca.crl", crl_der(ca))
    exporter = serve(tmp_path, ca, ("quiet", leaf(ca, "quiet.test", crl=url)), allow=[])
    try:
        assert one(samples(exporter, "gunicorn_cert_crl_error"), url, 'reason="refused_address"') == 1.0
        assert publisher.connections == 0
    finally:
        exporter.close()


def test_an_idp_naming_another_shard_is_never_read_as_this_one(
    tmp_path: Path, publisher: Publisher, ca: Issued
) -> None:
    url = publisher.url("/shard-1.crl")
    bad = leaf(ca, "bad.test", crl=url)
    publisher.route("/shard-1.crl", crl_der(ca, idp=publisher.url("/shard-2.crl")))  # says "good" for a shard-1 leaf
    exporter = serve(tmp_path, ca, ("bad", bad))
    try:
        assert samples(exporter, "gunicorn_cert_revoked") == {}
        assert one(samples(exporter, "gunicorn_cert_crl_error"), url, 'reason="idp_mismatch"') == 1.0
    finally:
        exporter.close()


def test_an_idp_naming_its_own_url_is_read(tmp_path: Path, publisher: Publisher, ca: Issued) -> None:
    url = publisher.url("/shard-1.crl")
    bad = leaf(ca, "bad.test", crl=url)
    publisher.route("/shard-1.crl", crl_der(ca, revoked={bad.cert.serial_number: REASON}, idp=url))
    exporter = serve(tmp_path, ca, ("bad", bad))
    try:
        assert one(samples(exporter, "gunicorn_cert_revoked"), "bad.pem") == 1.0
    finally:
        exporter.close()


def test_a_delta_crl_is_unsupported(tmp_path: Path, publisher: Publisher, ca: Issued) -> None:
    url = publisher.url("/delta.crl")
    publisher.route("/delta.crl", crl_der(ca, delta=True))
    exporter = serve(tmp_path, ca, ("d", leaf(ca, "d.test", crl=url)))
    try:
        assert samples(exporter, "gunicorn_cert_revoked") == {}
        assert one(samples(exporter, "gunicorn_cert_crl_error"), url, 'reason="unsupported"') == 1.0
    finally:
        exporter.close()


def test_a_leaf_without_pointers_has_no_revocation_info(tmp_path: Path, ca: Issued) -> None:
    exporter = serve(tmp_path, ca, ("bare", leaf(ca, "bare.test")))
    try:
        status = samples(exporter, "gunicorn_cert_revocation_status")
        assert one(status, "bare.pem", 'status="unknown"', 'reason="no_revocation_info"') == 1.0
    finally:
        exporter.close()


def test_a_revoked_leaf_on_a_live_endpoint_is_revoked(tmp_path: Path, publisher: Publisher, ca: Issued) -> None:
    url = publisher.url("/ca.crl")
    bad = leaf(ca, "bad.test", crl=url)
    publisher.route("/ca.crl", crl_der(ca, revoked={bad.cert.serial_number: x509.ReasonFlags.superseded}))
    server = TLSServer("127.0.0.1", context=server_context((bad, ca)))
    try:
        exporter = start_exporter(config(tmp_path, endpoints=[server.address]))
        try:
            exporter.scan_now()
            revoked = samples(exporter, "gunicorn_cert_revoked")
            assert one(revoked, f'endpoint="{server.address}"', 'index="0"') == 1.0
            status = samples(exporter, "gunicorn_cert_revocation_status")
            assert one(status, server.address, 'method="crl"', 'reason="superseded"') == 1.0
            assert rows(exporter)["bad.test"]["band"] == "critical"
        finally:
            exporter.close()
    finally:
        server.close()


@pytest.mark.integration
def test_check_says_critical_with_the_reason_and_time(tmp_path: Path, publisher: Publisher, ca: Issued) -> None:
    url = publisher.url("/ca.crl")
    bad = leaf(ca, "bad.test", crl=url)
    publisher.route("/ca.crl", crl_der(ca, revoked={bad.cert.serial_number: REASON}))
    path = config(tmp_path, files=files_of(tmp_path, ca, ("bad", bad)))
    done = subprocess.run(
        [sys.executable, "-m", "gunicorn_cert_exporter", "check", "--config", str(path), "--problems"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    line = next(line for line in done.stdout.splitlines() if "bad.test" in line)
    assert line.startswith("CRITICAL") and "key_compromise" in line and " on 20" in line and url in line


def test_a_responder_that_never_answers_never_delays_a_scan(tmp_path: Path, publisher: Publisher, ca: Issued) -> None:
    """While the CRL server holds its answer, files scans keep finishing and /metrics answers (counted, not timed).

    A scan whose thread waited for the fetch would stall; the scheduler skips a kind once MAX_ABANDONED of its
    threads are stuck: more scans than that while the request is held prove none waited.
    """
    url = publisher.url("/hold/ca.crl")
    publisher.state.hold = threading.Event()
    publisher.route("/hold/ca.crl", crl_der(ca))
    path = config(tmp_path, files=files_of(tmp_path, ca, ("slow", leaf(ca, "slow.test", crl=url))),
                  revocation={"timeout": "300s"})  # fmt: skip
    exporter = start_exporter(path, schedule=True)
    finished: list[float] = []

    def count(snap: Snapshot) -> None:
        stats = dict(snap.scans).get(ScanKind.FILES)
        if stats is not None and (not finished or finished[-1] != stats.finished_at):
            finished.append(stats.finished_at)

    exporter.service.subscribe(count)
    try:
        eventually(lambda: publisher.state.held >= 1, "the CRL server holding a request")
        enough = len(finished) + MAX_ABANDONED + 2
        eventually(lambda: len(finished) >= enough, "more files scans than stuck threads allowed, while held")
        assert "gunicorn_cert_file_not_after_timestamp_seconds" in exporter.get("/metrics")[1].decode()
        assert publisher.state.held >= 1 and not publisher.state.hold.is_set()
    finally:
        publisher.state.hold.set()
        exporter.close()


def _pool_over(tmp_path: Path, ca: Issued, storage: Path, *leaves: tuple[str, Issued]) -> tuple[Store, RevocationPool]:
    """A store holding a files scan of the leaves, and a revocation pool over it keeping its state in ``storage``."""
    store = Store()
    wanted = [Wanted(str(p)) for p in files_of(tmp_path, ca, *leaves)]
    store.update(files=tuple(FileScanner(clock=time.time, max_size=1 << 20).scan(wanted)))
    pool = RevocationPool(store=store, storage_path=str(storage))
    pool.configure(load_config(config(tmp_path).read_text()))
    return store, pool


def test_a_restart_reads_the_kept_crl_instead_of_fetching_it_again(
    tmp_path: Path, publisher: Publisher, ca: Issued
) -> None:
    url = publisher.url("/ca.crl")
    bad = leaf(ca, "bad.test", crl=url)
    publisher.route("/ca.crl", crl_der(ca, revoked={bad.cert.serial_number: REASON}))
    storage = tmp_path / "storage"
    storage.mkdir()
    for _ in range(2):  # the first process fetches; the second reads what the first kept
        store, pool = _pool_over(tmp_path, ca, storage, ("bad", bad))
        try:
            pool.settle()
            (answer,) = store.snapshot.revocation
            assert (answer.method, answer.status, answer.reason) == ("crl", "revoked", "key_compromise")
        finally:
            pool.stop()
    assert publisher.asked("/ca.crl") == 1
    assert len(list((storage / "revocation").glob("*.crl"))) == 1
