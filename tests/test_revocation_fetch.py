"""Revocation fetched from the leaves' own pointers: CRL Distribution Points and OCSP responders on loopback.

A real CA made at test time publishes CRLs and OCSP answers (built with cryptography) from an HTTP server on
127.0.0.1; the exporter is wired as ``serve`` wires it, with ``allow: ["127.0.0.1"]``.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gunicorn_cert_exporter.config import load as load_config
from gunicorn_cert_exporter.model import Snapshot
from gunicorn_cert_exporter.scanning.revocation_pool import RevocationPool
from gunicorn_cert_exporter.scanning.scheduler import MAX_ABANDONED
from gunicorn_cert_exporter.scanning.store import Store
from gunicorn_cert_exporter.sources.files import FileScanner, Wanted
from gunicorn_cert_exporter.vocabulary import ScanKind
from tests.revocation_support import Publisher, config, crl_der, leaf, ocsp_signer, responder, utc_now
from tests.support import (
    PKI,
    Issued,
    RunningExporter,
    TLSServer,
    eventually,
    parse_samples,
    server_context,
    start_exporter,
)

REASON = x509.ReasonFlags.key_compromise
HOUR = dt.timedelta(hours=1)


@pytest.fixture
def publisher() -> Iterator[Publisher]:
    server = Publisher("127.0.0.1")
    yield server
    server.close()


@pytest.fixture
def ca() -> Issued:
    return PKI().ca("Revocation Test CA")


def _files(tmp_path: Path, ca: Issued, *leaves: tuple[str, Issued]) -> list[Path]:
    """Write each leaf with its CA after it (the bundle holds the issuer), return the paths."""
    paths = []
    for name, issued in leaves:
        path = tmp_path / f"{name}.pem"
        path.write_bytes(issued.cert_pem + ca.cert_pem)
        paths.append(path)
    return paths


def _serve(tmp_path: Path, ca: Issued, *leaves: tuple[str, Issued], **revocation: object) -> RunningExporter:
    exporter = start_exporter(config(tmp_path, files=_files(tmp_path, ca, *leaves), revocation=dict(revocation)))
    exporter.scan_now()
    return exporter


_LAST: list[object] = []


def _samples(exporter: RunningExporter, name: str) -> dict[str, float]:
    _LAST[:] = [exporter.service.snapshot().revocation, exporter.service.snapshot().revocation_urls]
    return {k: v for k, v in exporter.metrics().items() if k.startswith(name + "{")}


def _one(samples: dict[str, float], *needles: str) -> float:
    found = [v for k, v in samples.items() if all(n in k for n in needles)]
    assert len(found) == 1, (needles, samples, _LAST)
    return found[0]


def _rows(exporter: RunningExporter) -> dict[str, dict[str, object]]:
    code, body = exporter.get("/api/v1/status")
    assert code == 200
    return {
        str(cert["subject"]).removeprefix("CN="): cert for row in json.loads(body)["sources"] for cert in row["certs"]
    }


def test_a_revoked_leaf_in_a_file_is_revoked_with_reason_and_an_unrevoked_one_good(
    tmp_path: Path, publisher: Publisher, ca: Issued
) -> None:
    url = publisher.url("/ca.crl")
    bad, fine = leaf(ca, "bad.test", crl=url), leaf(ca, "fine.test", crl=url)
    publisher.route("/ca.crl", crl_der(ca, revoked={bad.cert.serial_number: REASON}))
    exporter = _serve(tmp_path, ca, ("bad", bad), ("fine", fine))
    try:
        revoked = _samples(exporter, "gunicorn_cert_revoked")
        assert _one(revoked, "bad.pem") == 1.0
        assert _one(revoked, "fine.pem") == 0.0
        status = _samples(exporter, "gunicorn_cert_revocation_status")
        assert _one(status, "bad.pem", 'method="crl"', 'status="revoked"', 'reason="key_compromise"') == 1.0
        assert _one(status, "fine.pem", 'method="crl"', 'status="good"') == 1.0
        assert _one(_samples(exporter, "gunicorn_cert_revocation_time_seconds"), "bad.pem") > 0
        assert _one(_samples(exporter, "gunicorn_cert_crl_next_update_timestamp_seconds"), url) > 0
        assert publisher.asked("/ca.crl") == 1  # one CRL shared by both leaves: fetched once
        rows = _rows(exporter)
        assert rows["bad.test"]["band"] == "critical"
        assert "key_compromise" in str(rows["bad.test"]["note"]) and url in str(rows["bad.test"]["note"])
        assert rows["fine.test"]["band"] != "critical"
    finally:
        exporter.close()


def test_a_crl_signed_by_another_key_is_bad_signature_never_good_or_revoked(
    tmp_path: Path, publisher: Publisher, ca: Issued
) -> None:
    url = publisher.url("/ca.crl")
    bad = leaf(ca, "bad.test", crl=url)
    impostor = PKI().ca("Revocation Test CA")  # the same name, another key
    publisher.route("/ca.crl", crl_der(ca, revoked={bad.cert.serial_number: REASON}, signer=impostor))
    exporter = _serve(tmp_path, ca, ("bad", bad))
    try:
        assert _samples(exporter, "gunicorn_cert_revoked") == {}
        assert _one(_samples(exporter, "gunicorn_cert_crl_error"), url, 'reason="bad_signature"') == 1.0
        status = _samples(exporter, "gunicorn_cert_revocation_status")
        assert _one(status, 'status="unknown"', 'reason="bad_signature"') == 1.0
        assert _rows(exporter)["bad.test"]["band"] != "critical"
    finally:
        exporter.close()


def test_a_crl_past_its_next_update_is_stale_and_answers_nothing(
    tmp_path: Path, publisher: Publisher, ca: Issued
) -> None:
    url = publisher.url("/old.crl")
    bad = leaf(ca, "bad.test", crl=url)
    publisher.route("/old.crl", crl_der(ca, revoked={bad.cert.serial_number: REASON}, next_update=utc_now() - HOUR))
    exporter = _serve(tmp_path, ca, ("bad", bad))
    try:
        assert _samples(exporter, "gunicorn_cert_revoked") == {}
        assert _one(_samples(exporter, "gunicorn_cert_crl_error"), url, 'reason="stale"') == 1.0
        assert _one(_samples(exporter, "gunicorn_cert_revocation_status"), 'status="unknown"', 'reason="stale"') == 1
    finally:
        exporter.close()


def test_a_50_mb_crl_is_refused_as_too_large(tmp_path: Path, publisher: Publisher, ca: Issued) -> None:
    url = publisher.url("/huge.crl")
    publisher.route("/huge.crl", b"\x30" * (50 * 1000 * 1000))
    exporter = _serve(tmp_path, ca, ("big", leaf(ca, "big.test", crl=url)), max_crl_size="20MiB")
    try:
        assert _one(_samples(exporter, "gunicorn_cert_crl_error"), url, 'reason="too_large"') == 1.0
        assert _samples(exporter, "gunicorn_cert_revoked") == {}
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
        exporter = _serve(tmp_path, ca, ("moved", leaf(ca, "moved.test", crl=url)))
        try:
            assert _one(_samples(exporter, "gunicorn_cert_crl_error"), url, 'reason="refused_address"') == 1.0
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
    exporter = _serve(tmp_path, ca, ("quiet", leaf(ca, "quiet.test", crl=url)), allow=[])
    try:
        assert _one(_samples(exporter, "gunicorn_cert_crl_error"), url, 'reason="refused_address"') == 1.0
        assert publisher.connections == 0
    finally:
        exporter.close()


def test_an_idp_naming_another_shard_is_never_read_as_this_one(
    tmp_path: Path, publisher: Publisher, ca: Issued
) -> None:
    url = publisher.url("/shard-1.crl")
    bad = leaf(ca, "bad.test", crl=url)
    publisher.route("/shard-1.crl", crl_der(ca, idp=publisher.url("/shard-2.crl")))  # says "good" for a shard-1 leaf
    exporter = _serve(tmp_path, ca, ("bad", bad))
    try:
        assert _samples(exporter, "gunicorn_cert_revoked") == {}
        assert _one(_samples(exporter, "gunicorn_cert_crl_error"), url, 'reason="idp_mismatch"') == 1.0
    finally:
        exporter.close()


def test_an_idp_naming_its_own_url_is_read(tmp_path: Path, publisher: Publisher, ca: Issued) -> None:
    url = publisher.url("/shard-1.crl")
    bad = leaf(ca, "bad.test", crl=url)
    publisher.route("/shard-1.crl", crl_der(ca, revoked={bad.cert.serial_number: REASON}, idp=url))
    exporter = _serve(tmp_path, ca, ("bad", bad))
    try:
        assert _one(_samples(exporter, "gunicorn_cert_revoked"), "bad.pem") == 1.0
    finally:
        exporter.close()


def test_a_delta_crl_is_unsupported(tmp_path: Path, publisher: Publisher, ca: Issued) -> None:
    url = publisher.url("/delta.crl")
    publisher.route("/delta.crl", crl_der(ca, delta=True))
    exporter = _serve(tmp_path, ca, ("d", leaf(ca, "d.test", crl=url)))
    try:
        assert _samples(exporter, "gunicorn_cert_revoked") == {}
        assert _one(_samples(exporter, "gunicorn_cert_crl_error"), url, 'reason="unsupported"') == 1.0
    finally:
        exporter.close()


def test_the_issuer_is_fetched_from_ca_issuers_when_no_file_holds_it(
    tmp_path: Path, publisher: Publisher, ca: Issued
) -> None:
    url = publisher.url("/ca.crl")
    bad = leaf(ca, "bad.test", crl=url, ca_issuers=publisher.url("/ca.der"))
    publisher.route("/ca.crl", crl_der(ca, revoked={bad.cert.serial_number: REASON}))
    publisher.route("/ca.der", ca.cert.public_bytes(serialization.Encoding.DER))
    (tmp_path / "alone.pem").write_bytes(bad.cert_pem)  # no CA in the bundle
    exporter = start_exporter(config(tmp_path, files=[tmp_path / "alone.pem"]))
    try:
        exporter.scan_now()
        assert _one(_samples(exporter, "gunicorn_cert_revoked"), "alone.pem") == 1.0
        assert publisher.asked("/ca.der") == 1
    finally:
        exporter.close()


def test_without_an_issuer_the_crl_is_issuer_unknown(tmp_path: Path, publisher: Publisher, ca: Issued) -> None:
    url = publisher.url("/ca.crl")
    bad = leaf(ca, "bad.test", crl=url)
    publisher.route("/ca.crl", crl_der(ca, revoked={bad.cert.serial_number: REASON}))
    (tmp_path / "alone.pem").write_bytes(bad.cert_pem)
    exporter = start_exporter(config(tmp_path, files=[tmp_path / "alone.pem"]))
    try:
        exporter.scan_now()
        assert _samples(exporter, "gunicorn_cert_revoked") == {}
        status = _samples(exporter, "gunicorn_cert_revocation_status")
        assert _one(status, 'status="unknown"', 'reason="issuer_unknown"') == 1.0
    finally:
        exporter.close()


def test_a_leaf_without_pointers_has_no_revocation_info(tmp_path: Path, ca: Issued) -> None:
    exporter = _serve(tmp_path, ca, ("bare", leaf(ca, "bare.test")))
    try:
        status = _samples(exporter, "gunicorn_cert_revocation_status")
        assert _one(status, "bare.pem", 'status="unknown"', 'reason="no_revocation_info"') == 1.0
    finally:
        exporter.close()


@pytest.mark.parametrize("cert_id", ["sha1", "sha256"])
def test_ocsp_good_revoked_and_unknown_from_a_responder(
    tmp_path: Path, publisher: Publisher, ca: Issued, cert_id: str
) -> None:
    url = publisher.url("/ocsp")
    good, bad, odd = (leaf(ca, f"{n}.test", ocsp_url=url) for n in ("good", "bad", "odd"))
    statuses = {good.cert.serial_number: ("good", None), bad.cert.serial_number: ("revoked", REASON)}
    publisher.route("/ocsp", responder(ca, statuses))
    exporter = _serve(tmp_path, ca, ("good", good), ("bad", bad), ("odd", odd), ocsp_hash=cert_id)
    try:
        revoked = _samples(exporter, "gunicorn_cert_revoked")
        assert (_one(revoked, "good.pem"), _one(revoked, "bad.pem")) == (0.0, 1.0)
        assert not [k for k in revoked if "odd.pem" in k]
        status = _samples(exporter, "gunicorn_cert_revocation_status")
        assert _one(status, "bad.pem", 'method="ocsp"', 'status="revoked"', 'reason="key_compromise"') == 1.0
        assert _one(status, "odd.pem", 'method="ocsp"', 'status="unknown"', 'reason="unknown_to_responder"') == 1
        assert _rows(exporter)["bad.test"]["band"] == "critical"
    finally:
        exporter.close()


@pytest.mark.parametrize(("signing", "expected"), [(True, 1.0), (False, None)])
def test_a_delegated_responder_needs_ocsp_signing(
    tmp_path: Path, publisher: Publisher, ca: Issued, signing: bool, expected: float | None
) -> None:
    url = publisher.url("/ocsp")
    bad = leaf(ca, "bad.test", ocsp_url=url)
    delegate = ocsp_signer(ca, ocsp_signing=signing)
    publisher.route(
        "/ocsp", responder(ca, {bad.cert.serial_number: ("revoked", REASON)}, signer=delegate, delegate=True)
    )
    exporter = _serve(tmp_path, ca, ("bad", bad))
    try:
        revoked = _samples(exporter, "gunicorn_cert_revoked")
        assert (_one(revoked, "bad.pem") if revoked else None) == expected
        if expected is None:
            assert _one(_samples(exporter, "gunicorn_cert_ocsp_error"), url, 'reason="bad_signature"') == 1.0
    finally:
        exporter.close()


def test_an_ocsp_answer_signed_by_another_key_is_bad_signature(
    tmp_path: Path, publisher: Publisher, ca: Issued
) -> None:
    url = publisher.url("/ocsp")
    bad = leaf(ca, "bad.test", ocsp_url=url)
    impostor = PKI().ca("Revocation Test CA")
    publisher.route("/ocsp", responder(ca, {bad.cert.serial_number: ("revoked", REASON)}, signer=impostor))
    exporter = _serve(tmp_path, ca, ("bad", bad))
    try:
        assert _samples(exporter, "gunicorn_cert_revoked") == {}
        assert _one(_samples(exporter, "gunicorn_cert_ocsp_error"), url, 'reason="bad_signature"') == 1.0
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
            revoked = _samples(exporter, "gunicorn_cert_revoked")
            assert _one(revoked, f'endpoint="{server.address}"', 'index="0"') == 1.0
            status = _samples(exporter, "gunicorn_cert_revocation_status")
            assert _one(status, server.address, 'method="crl"', 'reason="superseded"') == 1.0
            assert _rows(exporter)["bad.test"]["band"] == "critical"
        finally:
            exporter.close()
    finally:
        server.close()


def test_check_says_critical_with_the_reason_and_time(tmp_path: Path, publisher: Publisher, ca: Issued) -> None:
    url = publisher.url("/ca.crl")
    bad = leaf(ca, "bad.test", crl=url)
    publisher.route("/ca.crl", crl_der(ca, revoked={bad.cert.serial_number: REASON}))
    path = config(tmp_path, files=_files(tmp_path, ca, ("bad", bad)))
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
    path = config(tmp_path, files=_files(tmp_path, ca, ("slow", leaf(ca, "slow.test", crl=url))),
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
    wanted = [Wanted(str(p)) for p in _files(tmp_path, ca, *leaves)]
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


def test_probe_with_revocation_checks_the_targets_chain(tmp_path: Path, publisher: Publisher, ca: Issued) -> None:
    url = publisher.url("/ocsp")
    bad = leaf(ca, "bad.test", ocsp_url=url)
    publisher.route("/ocsp", responder(ca, {bad.cert.serial_number: ("revoked", REASON)}))
    server = TLSServer("127.0.0.1", context=server_context((bad, ca)))
    path = config(tmp_path)
    path.write_text(path.read_text() + 'probe: {allow: ["127.0.0.1:*"]}\n')
    exporter = start_exporter(path)
    try:
        code, plain = exporter.get(f"/probe?target={server.address}")
        assert code == 200 and b"gunicorn_cert_revoked" not in plain and publisher.asked("/ocsp") == 0
        code, body = exporter.get(f"/probe?target={server.address}&revocation=1")
        assert code == 200, body
        samples = parse_samples(body.decode())
        assert _one({k: v for k, v in samples.items() if k.startswith("gunicorn_cert_revoked{")}, server.address) == 1
        assert publisher.asked("/ocsp") == 1
    finally:
        exporter.close()
        server.close()


@pytest.mark.parametrize(("fault", "reason"), [("other_serial", "cert_id_mismatch"), ("expired", "stale")])
def test_an_ocsp_answer_for_another_certid_or_past_its_window_answers_nothing(
    tmp_path: Path, publisher: Publisher, ca: Issued, fault: str, reason: str
) -> None:
    url = publisher.url("/ocsp")
    bad = leaf(ca, "bad.test", ocsp_url=url)
    statuses = {bad.cert.serial_number: ("revoked", REASON), bad.cert.serial_number + 1: ("revoked", REASON)}
    publisher.route("/ocsp", responder(ca, statuses, other_serial=fault == "other_serial", expired=fault == "expired"))
    exporter = _serve(tmp_path, ca, ("bad", bad))
    try:
        assert _samples(exporter, "gunicorn_cert_revoked") == {}
        assert _one(_samples(exporter, "gunicorn_cert_ocsp_error"), url, f'reason="{reason}"') == 1.0
    finally:
        exporter.close()


def test_probe_revocation_needs_revocation_enabled(tmp_path: Path, publisher: Publisher, ca: Issued) -> None:
    url = publisher.url("/ocsp")
    publisher.route("/ocsp", responder(ca, {}))
    server = TLSServer("127.0.0.1", context=server_context((leaf(ca, "bad.test", ocsp_url=url), ca)))
    path = config(tmp_path, revocation={"enabled": False})
    path.write_text(path.read_text() + 'probe: {allow: ["127.0.0.1:*"]}\n')
    exporter = start_exporter(path)
    try:
        code, body = exporter.get(f"/probe?target={server.address}&revocation=1")
        assert code == 403 and b"revocation.enabled" in body
        assert publisher.connections == 0
    finally:
        exporter.close()
        server.close()
