"""ARI end to end: an RFC 9773 server on loopback, the exporter's pool, the page, the API, /metrics and ``check``.

No ARI-capable ACME server is packaged here (Debian's pebble 2.4.0 predates ARI), so ``tests.acme_support``
serves RFC 9773's directory and renewalInfo resource, with Retry-After and windows a test moves.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gunicorn_cert_exporter.model import Snapshot
from gunicorn_cert_exporter.scanning.scheduler import MAX_ABANDONED
from gunicorn_cert_exporter.vocabulary import ScanKind
from tests.acme_support import (
    DAY,
    EXPLANATION,
    HOUR,
    AcmeServer,
    Reply,
    acme_leaf,
    ari_config,
    ari_service,
    band_of,
    certbot_lineage,
    leaf_file,
    utc_now,
)
from tests.support import Issued, RunningExporter, TLSServer, eventually, server_context, start_exporter


def _certs(exporter: RunningExporter) -> dict[str, dict[str, object]]:
    """Return each certificate row of /api/v1/status by subject."""
    code, body = exporter.get("/api/v1/status")
    assert code == 200
    rows = json.loads(body)["sources"]
    return {cert["subject"]: cert for row in rows for cert in row["certs"]}


def test_an_early_window_is_critical_with_the_cas_explanation(tmp_path: Path, acme: AcmeServer, ca: Issued) -> None:
    """A 90-day certificate with 81 days left whose window ended an hour ago: as a files entry and a lineage."""
    early, early_path = leaf_file(tmp_path, ca, "early", lifetime_days=90, left=81 * DAY)
    lineage = acme_leaf(ca, lifetime=90 * DAY, left=81 * DAY, cn="lineage.test")
    certbot_dir = tmp_path / "letsencrypt"
    live = certbot_lineage(certbot_dir, "lineage.test", lineage, ca, server=acme.directory)
    assert live.is_symlink() and "archive" in str(live.resolve())
    for leaf in (early, lineage):
        acme.answer(leaf, Reply(utc_now() - 2 * HOUR, utc_now() - HOUR, EXPLANATION))
    exporter = start_exporter(ari_config(tmp_path, {early_path: acme.directory}, certbot=certbot_dir))
    try:
        exporter.scan_now()
        certs = _certs(exporter)
        for subject in ("early.test", "lineage.test"):
            assert certs[subject]["band"] == "critical", certs[subject]
            assert EXPLANATION in str(certs[subject]["note"])
        code, page = exporter.get("/")
        assert code == 200 and page.decode().count(EXPLANATION) >= 2
        metrics = exporter.metrics()
        requested = [k for k, v in metrics.items() if k.startswith("gunicorn_cert_ari_renewal_requested{") and v == 1]
        assert len(requested) == 2
        assert any(f'explanation_url="{EXPLANATION}"' in k for k in metrics if k.startswith("gunicorn_cert_ari_info"))
    finally:
        exporter.close()


def test_a_lineages_renew_before_expiry_is_its_usual_point(tmp_path: Path, acme: AcmeServer, ca: Issued) -> None:
    """A lineage renewed 60 days before expiry: a window ending with 61 days left is its usual one, not a request."""
    leaf = acme_leaf(ca, lifetime=90 * DAY, left=70 * DAY, cn="early-renewer.test")
    certbot_dir = tmp_path / "letsencrypt"
    certbot_lineage(certbot_dir, "early-renewer.test", leaf, ca, server=acme.directory, renew_before="60 days")
    acme.answer(leaf, Reply(utc_now() + 7 * DAY, utc_now() + 9 * DAY))
    exporter = start_exporter(ari_config(tmp_path, {}, certbot=certbot_dir))
    try:
        exporter.scan_now()
        assert acme.asked(leaf) == 1
        assert _certs(exporter)["early-renewer.test"]["band"] == "ok"
    finally:
        exporter.close()


def test_a_usual_window_that_ended_is_warning_and_one_ahead_is_ok(tmp_path: Path, acme: AcmeServer, ca: Issued) -> None:
    """27 days left of 90 and the usual window (a third of the lifetime left) ended: the lifetime alone says OK."""
    stale, stale_path = leaf_file(tmp_path, ca, "stale", lifetime_days=90, left=27 * DAY + HOUR)
    fresh, fresh_path = leaf_file(tmp_path, ca, "fresh", lifetime_days=90, left=80 * DAY)
    third_left = utc_now() + 27 * DAY + HOUR - 30 * DAY
    acme.answer(stale, Reply(third_left - 2 * DAY, third_left))
    acme.answer(fresh, Reply(utc_now() + 48 * DAY, utc_now() + 50 * DAY))
    exporter = start_exporter(ari_config(tmp_path, {stale_path: acme.directory, fresh_path: acme.directory}))
    try:
        exporter.scan_now()
        certs = _certs(exporter)
        assert certs["stale.test"]["band"] == "warning" and "renewal overdue" in str(certs["stale.test"]["note"])
        assert certs["fresh.test"]["band"] == "ok"
    finally:
        exporter.close()


def test_an_endpoints_served_leaf_is_asked_about(tmp_path: Path, acme: AcmeServer, ca: Issued) -> None:
    """An endpoint with ``acme.directory``: its served leaf's usual window ended, so the served row is WARNING."""
    leaf = acme_leaf(ca, lifetime=90 * DAY, left=27 * DAY + HOUR, cn="served.test")
    third_left = utc_now() + 27 * DAY + HOUR - 30 * DAY
    acme.answer(leaf, Reply(third_left - 2 * DAY, third_left))
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    server = TLSServer("127.0.0.1", context=server_context((leaf, ca)))
    config_path = ari_config(tmp_path, {})
    endpoint = {"address": server.address, "ca_file": "ca.pem", "acme": {"directory": acme.directory}}
    config_path.write_text(config_path.read_text() + f"endpoints: [{json.dumps(endpoint)}]\n")
    exporter = start_exporter(config_path)
    try:
        exporter.scan_now()
        assert acme.asked(leaf) == 1
        code, body = exporter.get("/api/v1/status")
        assert code == 200
        rows = [row for row in json.loads(body)["sources"] if row["kind"] == "endpoint"]
        assert rows[0]["verified"] is True and rows[0]["certs"][0]["band"] == "warning"
        assert "renewal overdue" in rows[0]["certs"][0]["note"]
        metrics = exporter.metrics()
        overdue = [k for k, v in metrics.items() if k.startswith("gunicorn_cert_ari_renewal_overdue{") and v == 1]
        assert len(overdue) == 1 and 'kind="endpoint"' in overdue[0]
    finally:
        exporter.close()
        server.close()


@pytest.mark.integration
def test_check_says_critical_with_the_explanation(tmp_path: Path, acme: AcmeServer, ca: Issued) -> None:
    """``check`` asks what is due, waits for the answer, and exits 2 (CRITICAL) with the CA's explanation URL."""
    early, early_path = leaf_file(tmp_path, ca, "early", lifetime_days=90, left=81 * DAY)
    acme.answer(early, Reply(utc_now() - 2 * HOUR, utc_now() - HOUR, EXPLANATION))
    config_path = ari_config(tmp_path, {early_path: acme.directory})
    done = subprocess.run(
        [sys.executable, "-m", "gunicorn_cert_exporter", "check", "--config", str(config_path), "--problems"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    line = next(line for line in done.stdout.splitlines() if "early.test" in line)
    assert line.startswith("CRITICAL") and EXPLANATION in line


def test_the_window_moved_earlier_is_critical(tmp_path: Path, acme: AcmeServer, ca: Issued) -> None:
    now = [time.time()]
    leaf, path = leaf_file(tmp_path, ca, "moved", lifetime_days=90, left=80 * DAY)
    acme.answer(leaf, Reply(utc_now() + 50 * DAY, utc_now() + 52 * DAY))  # ends with 28 days left of 90
    service = ari_service(ari_config(tmp_path, {path: acme.directory}), clock=lambda: now[0])
    service.scan_now()
    assert band_of(service.snapshot(), now[0], "moved.test") == "ok"
    # Ending with 32 days left is within the usual point's margin (30 days + 5% of 90): only the move is news.
    acme.answer(leaf, Reply(utc_now() + 46 * DAY, utc_now() + 48 * DAY, EXPLANATION))
    now[0] += 6  # past the 5 s interval
    service.scan_now()
    assert acme.asked(leaf) == 2
    assert band_of(service.snapshot(), now[0], "moved.test") == "critical"


def test_a_503_with_retry_after_is_asked_once(tmp_path: Path, acme: AcmeServer, ca: Issued) -> None:
    busy, busy_path = leaf_file(tmp_path, ca, "busy", lifetime_days=90, left=80 * DAY)
    control, control_path = leaf_file(tmp_path, ca, "control", lifetime_days=90, left=80 * DAY)
    acme.answer(busy, Reply(status=503, retry_after=3600))
    acme.answer(control, Reply(utc_now() + 48 * DAY, utc_now() + 50 * DAY))
    exporter = start_exporter(
        ari_config(tmp_path, {busy_path: acme.directory, control_path: acme.directory}, interval="1s"), schedule=True
    )
    try:
        # The control certificate is asked again once its 1 s interval passed: the busy one had the same chances.
        eventually(lambda: acme.asked(control) >= 3, "the control certificate asked three times", timeout=90)
        assert acme.asked(busy) == 1
        metrics = exporter.metrics()
        assert any(k.startswith("gunicorn_cert_ari_error{") and 'reason="http_status"' in k for k in metrics)
    finally:
        exporter.close()


def test_an_unlisted_loopback_directory_is_never_contacted(tmp_path: Path, acme: AcmeServer, ca: Issued) -> None:
    hidden = AcmeServer("127.0.0.3")
    try:
        leaf, path = leaf_file(tmp_path, ca, "hidden", lifetime_days=90, left=80 * DAY)
        control, control_path = leaf_file(tmp_path, ca, "control", lifetime_days=90, left=80 * DAY)
        hidden.answer(leaf, Reply(utc_now() - 2 * HOUR, utc_now() - HOUR, EXPLANATION))
        acme.answer(control, Reply(utc_now() + 48 * DAY, utc_now() + 50 * DAY))
        exporter = start_exporter(ari_config(tmp_path, {path: hidden.directory, control_path: acme.directory}))
        try:
            exporter.scan_now()
            assert acme.asked(control) == 1  # the pass ran and asked what it may
            assert hidden.state.connections == 0
            metrics = exporter.metrics()
            assert any(k.startswith("gunicorn_cert_ari_error{") and 'reason="refused_address"' in k for k in metrics)
            assert _certs(exporter)["hidden.test"]["band"] == "ok"
        finally:
            exporter.close()
    finally:
        hidden.close()


def test_a_slow_acme_server_never_delays_a_scan(tmp_path: Path, acme: AcmeServer, ca: Issued) -> None:
    """While the ACME server holds its answer, files scans keep finishing (counted, not timed).

    A scan whose thread waited for ARI would still have recorded itself, but the scheduler skips a kind once
    MAX_ABANDONED of its threads are stuck: more scans than that while the request is held prove none waited.
    """
    leaf, path = leaf_file(tmp_path, ca, "slow", lifetime_days=90, left=80 * DAY)
    acme.answer(leaf, Reply(utc_now() + 48 * DAY, utc_now() + 50 * DAY))
    acme.state.hold = threading.Event()
    # The request outlasts the test's patience: a scan that waited for it would wait until the test gave up.
    exporter = start_exporter(ari_config(tmp_path, {path: acme.directory}, timeout="300s"), schedule=True)
    finished: list[float] = []

    def count(snap: Snapshot) -> None:
        stats = dict(snap.scans).get(ScanKind.FILES)
        if stats is not None and (not finished or finished[-1] != stats.finished_at):
            finished.append(stats.finished_at)

    exporter.service.subscribe(count)
    try:
        eventually(lambda: acme.state.held >= 1, "the ACME server holding a request")
        held_at = len(finished)
        enough = held_at + MAX_ABANDONED + 2
        eventually(lambda: len(finished) >= enough, "more files scans than stuck threads allowed, while held")
        assert acme.state.held >= 1 and not acme.state.hold.is_set()
    finally:
        acme.state.hold.set()
        exporter.close()
