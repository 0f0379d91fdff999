"""The status page in a real headless Chromium, at desktop and phone widths, with and without JavaScript."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, TypedDict

import pytest

from gunicorn_cert_exporter import status, status_rows
from gunicorn_cert_exporter.bands import Severity
from gunicorn_cert_exporter.model import (
    AddressDrift,
    AddressResult,
    EndpointResult,
    FileResult,
    MasterReason,
    MasterState,
    Snapshot,
    TargetState,
)
from gunicorn_cert_exporter.sources import certs
from tests.support import (
    DAY,
    LIFETIMES,
    NOW,
    PKI,
    Chromium,
    Issued,
    RunningExporter,
    StartExporter,
    TLSServer,
    free_port,
    lifetime_files,
    server_context,
)


class Viewport(TypedDict):
    """A window size, passed to ``Chromium.open`` as its keywords."""

    width: int
    height: int


DESKTOP: Viewport = {"width": 1366, "height": 768}
PHONE: Viewport = {"width": 390, "height": 844}
URGENCY = ["error", "expired", "critical", "warning", "ok"]
ROWS = """[...document.querySelectorAll('#sources tr.row')].map(r => ({band: r.dataset.band, text: r.innerText,
  days: r.querySelector('td.num').textContent, top: r.getBoundingClientRect().top,
  bottom: r.getBoundingClientRect().bottom, hidden: r.hidden}))"""
EXPIRED_ROOT = "Expired Root"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a path as short as /etc/ssl/certs: pytest's long tmp_path would wrap rows on the page."""
    with tempfile.TemporaryDirectory(prefix="gce-") as directory:
        yield Path(directory)


def _fresh_machine(run_exporter: StartExporter, tmp_path: Path, pki: PKI) -> RunningExporter:
    """Like the embedded default on a fresh host: a 140-root trust store with one expired, a target not there yet."""
    roots = [pki.ca(f"Fine Root {i:03d}", not_after=NOW + (900 + i) * DAY) for i in range(140)]
    roots[17] = pki.issue(EXPIRED_ROOT, ca=True, not_before=NOW - 900 * DAY, not_after=NOW - 564 * DAY)
    (tmp_path / "ca-certificates.crt").write_bytes(b"".join(r.cert_pem for r in roots))
    root = roots[0]
    (tmp_path / "fine.pem").write_bytes(pki.leaf(root, "fine.example").cert_pem)
    for name, left in (("soon", 5), ("later", 20)):  # 90-day leaves: critical below 7 days left, warning below 22.5
        leaf = pki.leaf(root, f"{name}.example", not_before=NOW - (90 - left) * DAY, not_after=NOW + left * DAY)
        (tmp_path / f"{name}.pem").write_bytes(leaf.cert_pem)
    exporter: RunningExporter = run_exporter(
        f"files: [{{paths: ['{tmp_path}/ca-certificates.crt', '{tmp_path}/*.pem', '{tmp_path}/live/**/*.pem']}}]\n"
        f"gunicorn: [{{name: app, cert_file: {tmp_path}/tls/cert.pem, key_file: {tmp_path}/tls/key.pem, "
        f"endpoint: '127.0.0.1:{free_port()}', pidfile: {tmp_path}/app.pid}}]\n"
    )
    exporter.scan_now()
    return exporter


def _api(exporter: RunningExporter) -> dict[str, Any]:
    status, body = exporter.get("/api/v1/status")
    assert status == 200
    document: dict[str, Any] = json.loads(body)
    return document


def _counts(browser: Chromium) -> dict[str, int]:
    counts: dict[str, str] = browser.evaluate(
        "Object.fromEntries([...document.querySelectorAll('[data-count]')]"
        ".map(c => [c.dataset.count, c.querySelector('b').textContent]))"
    )
    return {key: int(value) for key, value in counts.items()}


@pytest.mark.integration
def test_first_screen_shows_the_summary_and_the_expired_root_above_every_ok_row(
    run_exporter: StartExporter, tmp_path: Path, short_dir: Path, pki: PKI, browser: Chromium
) -> None:
    exporter = _fresh_machine(run_exporter, short_dir, pki)
    api = _api(exporter)
    expected = {"expired": 1, "critical": 1, "warning": 2, "ok": 140, "retired": 0, "errors": 3}
    assert api["summary"] == {**expected, "drifting_targets": 0, "blocked_reloads": 0}
    browser.open(exporter.url + "/", **DESKTOP)
    assert browser.evaluate("document.title") == (
        "CRITICAL — 1 expired · 3 errors · 1 critical · 2 warning · gunicorn-cert-exporter"
    )
    assert _counts(browser) == api["summary"]  # the page and the JSON read the same view
    summary = browser.evaluate("document.getElementById('summary').getBoundingClientRect().bottom")
    rows = browser.evaluate(ROWS)
    bands = [r["band"] for r in rows]
    assert bands == sorted(bands, key=URGENCY.index)  # errors, expired, critical, warning, ok
    expired = next(r for r in rows if r["band"] == "expired")
    assert EXPIRED_ROOT in expired["text"] and "soonest of 140" in expired["text"]
    assert summary <= DESKTOP["height"] and expired["bottom"] <= DESKTOP["height"]  # on the first screen
    assert all(r["top"] >= expired["bottom"] for r in rows if r["band"] == "ok")
    for band in ("warning", "ok"):  # within a band, the soonest expiry first
        days = [float(r["days"]) for r in rows if r["band"] == band and r["days"] != "-"]
        assert days == sorted(days)
    targets = browser.evaluate("document.getElementById('targets').innerText")
    assert "unknown" in targets and "refused" in targets and "in sync" not in targets
    assert api["targets"][0]["drift"] == "unknown"
    assert browser.screenshot(tmp_path / "desktop.png").startswith(b"\x89PNG")

    members = "document.querySelectorAll('#sources details li')"
    assert browser.evaluate("document.querySelector('#sources details').open") is False
    browser.click("#sources details summary")
    assert browser.evaluate("document.querySelector('#sources details').open") is True
    assert browser.evaluate(f"[...{members}].filter(li => li.offsetParent !== null).length") == 140
    assert EXPIRED_ROOT in browser.evaluate(f"{members}[0].innerText")  # the bundle's own order is by urgency too
    browser.evaluate("document.querySelector('#sources details').scrollIntoView()")
    browser.screenshot(tmp_path / "desktop-expanded.png")

    browser.open(exporter.url + "/", **PHONE)
    assert browser.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # no sideways scrolling
    phone_rows = browser.evaluate(ROWS)
    assert [r["band"] for r in phone_rows] == bands
    assert browser.evaluate("document.getElementById('summary').getBoundingClientRect().bottom") <= PHONE["height"]
    browser.screenshot(tmp_path / "phone.png")


@pytest.mark.integration
def test_the_page_is_complete_without_javascript(
    run_exporter: StartExporter, tmp_path: Path, pki: PKI, browser: Chromium
) -> None:
    exporter = _fresh_machine(run_exporter, tmp_path, pki)
    browser.open(exporter.url + "/", **DESKTOP)
    with_script = browser.evaluate(ROWS)
    browser.open(exporter.url + "/", **DESKTOP, javascript=False)
    rows = browser.evaluate(ROWS)
    assert [r["text"] for r in rows] == [r["text"] for r in with_script]
    assert len(rows) == len(_api(exporter)["sources"])
    assert browser.evaluate("document.querySelector('#sources details').open") is False
    assert browser.evaluate("document.querySelectorAll('#sources details li').length") == 140
    browser.click("#sources details summary")  # <details> needs no script
    assert browser.evaluate("document.querySelector('#sources details').open") is True
    browser.type("#q", "later")
    assert not any(r["hidden"] for r in browser.evaluate(ROWS))  # no script runs: typing filters nothing
    browser.screenshot(tmp_path / "no-javascript.png")

    browser.open(exporter.url + "/?q=" + urllib.parse.quote("Fine Root 042"), **PHONE, javascript=False)
    filtered = browser.evaluate(ROWS)  # the form's GET: the server filters the same way
    assert len(filtered) == 1 and "soonest of 140" in filtered[0]["text"]
    assert browser.evaluate("document.querySelector('#sources details').open") is True
    assert browser.evaluate("[...document.querySelectorAll('#sources details li')].map(li => li.innerText)")[0].count(
        "Fine Root 042"
    )
    assert browser.evaluate("document.querySelectorAll('#sources details li').length") == 1


@pytest.mark.integration
def test_the_filter_box_filters_as_one_types(
    run_exporter: StartExporter, tmp_path: Path, pki: PKI, browser: Chromium
) -> None:
    exporter = _fresh_machine(run_exporter, tmp_path, pki)
    browser.open(exporter.url + "/", **DESKTOP)
    browser.type("#q", "Fine Root 042")
    visible = [r for r in browser.evaluate(ROWS) if not r["hidden"]]
    assert len(visible) == 1 and "ca-certificates.crt" in visible[0]["text"]
    shown = browser.evaluate("[...document.querySelectorAll('#sources details li')].filter(li => !li.hidden)")
    assert len(shown) == 1
    assert browser.evaluate("document.querySelector('#sources details').open") is True
    browser.screenshot(tmp_path / "filtered.png")


def _drifting(
    run_exporter: StartExporter, tmp_path: Path, pki: PKI, root: Issued, tls_server: type[TLSServer]
) -> RunningExporter:
    hostile = "<img src=x onerror=\"document.title='pwned'\">\nline two\x1b[31m red"
    (tmp_path / "evil.pem").write_bytes(pki.leaf(root, hostile).cert_pem)
    (tmp_path / "<svg onload=alert(1)>.pem").write_bytes(pki.leaf(root, "named.example").cert_pem)
    new = pki.leaf(root, "new.example")
    (tmp_path / "cert.pem").write_bytes(new.cert_pem)
    (tmp_path / "key.key").write_bytes(new.key_pem)
    (tmp_path / "other.key").write_bytes(pki.leaf(root).key_pem)  # a half-rotated pair: a reload must wait
    server = tls_server("127.0.0.1", context=server_context((pki.leaf(root, "old.example"),)))
    exporter: RunningExporter = run_exporter(
        f"files: [{{paths: ['{tmp_path}/*.pem']}}]\n"
        f"gunicorn: [{{name: app, cert_file: {tmp_path}/cert.pem, key_file: {tmp_path}/key.key, "
        f"endpoint: '{server.address}', server_name: localhost, pid: 999999}},\n"
        f"  {{name: blocked, cert_file: {tmp_path}/cert.pem, key_file: {tmp_path}/other.key, "
        f"endpoint: '{server.address}', server_name: localhost, pid: 999999, reload: {{enabled: true, after: 0s}}}}]\n"
    )
    exporter.scan_now()
    return exporter


@pytest.mark.integration
def test_hostile_subjects_and_file_names_stay_text(
    run_exporter: StartExporter,
    tmp_path: Path,
    pki: PKI,
    root: Issued,
    tls_server: type[TLSServer],
    browser: Chromium,
) -> None:
    exporter = _drifting(run_exporter, tmp_path, pki, root, tls_server)
    browser.open(exporter.url + "/", **DESKTOP)
    assert browser.evaluate("document.title").startswith("CRITICAL — ")  # no injected handler rewrote it
    assert browser.evaluate("document.querySelectorAll('img, svg').length") == 0
    text = browser.evaluate("document.body.innerText")
    assert "<img src=x onerror=\"document.title='pwned'\">\\x0aline two\\x1b[31m red" in text
    assert "<svg onload=alert(1)>.pem" in text
    targets = browser.evaluate("document.getElementById('targets').innerText")
    assert "drift" in targets and "since" in targets and "not verified: unknown_ca" in text
    assert "none: reload disabled" in targets  # the last reload decision and its reason
    assert "blocked: key_file does not match cert_file" in targets
    api = _api(exporter)
    assert api["summary"]["drifting_targets"] == 2 and api["summary"]["blocked_reloads"] == 1
    assert _counts(browser) == api["summary"]
    browser.screenshot(tmp_path / "hostile.png")


def test_every_field_of_the_status_document_is_documented() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "status-api.md").read_text()
    names = set(status.document(status.build(Snapshot(), now=0.0)))
    for row in (
        status_rows.Summary,
        status_rows.TargetRow,
        status_rows.DriftRow,
        status_rows.SourceRow,
        status_rows.CertRow,
    ):
        names |= {f.name for f in dataclasses.fields(row)}
    assert {name for name in names if f"`{name}`" not in text} == set()


def test_before_the_first_scan_the_state_is_unknown_not_ok(run_exporter: StartExporter, tmp_path: Path) -> None:
    exporter: RunningExporter = run_exporter(f"files: [{{paths: ['{tmp_path}/*.pem']}}]\n")
    api = _api(exporter)
    assert api["status"] == "UNKNOWN" and api["scanned_at"] is None
    assert api["headline"] == "UNKNOWN — no scan finished yet"
    exporter.scan_now()
    assert _api(exporter)["status"] == "WARNING"  # the glob matches nothing


def test_file_names_that_are_not_utf8_reach_the_page_and_the_json(
    run_exporter: StartExporter, tmp_path: Path, root: Issued
) -> None:
    (tmp_path / os.fsdecode(b"bad\xff.pem")).write_bytes(root.cert_pem)
    exporter: RunningExporter = run_exporter(f"files: [{{paths: ['{tmp_path}/*.pem']}}]\n")
    exporter.scan_now()
    (source,) = _api(exporter)["sources"]
    assert source["source"] == f"{tmp_path}/" + os.fsdecode(b"bad\xff.pem")
    status_code, page = exporter.get("/")
    assert status_code == 200 and b"bad\\udcff.pem" in page


@pytest.mark.parametrize(
    ("reason", "severity"),
    [
        (MasterReason.SCAN_FAILED, Severity.UNKNOWN),  # the exporter did not look: no finding either way
        (MasterReason.PERMISSION_DENIED, Severity.UNKNOWN),
        (MasterReason.NO_PROCESS, Severity.WARNING),  # looked, and found no master: a finding
    ],
)
def test_a_master_the_exporter_could_not_look_at_is_unknown_not_a_warning(
    reason: MasterReason, severity: Severity, root: Issued
) -> None:
    leaf = certs.parse(root.cert_pem).certs[0]
    target = TargetState(  # in sync and paired: the master is the row's only problem
        name="api",
        key_match=True,
        cert=FileResult(path="cert.pem", certs=(leaf,)),
        key=FileResult(path="key.pem"),
        endpoint=EndpointResult(
            endpoint="127.0.0.1:8443", server_name="", addresses=(AddressResult(address="127.0.0.1", chain=(leaf,)),)
        ),
        drift=(AddressDrift(address="127.0.0.1", mismatch=False),),
        master=MasterState(error=reason),
    )
    row = status.build(Snapshot(targets=(target,)), now=0.0).targets[0]
    assert row.problems == (f"master {reason.value}",) and row.severity == severity


class _SourceRows(HTMLParser):
    """The rows of the page's sources table: their band and the text of each cell, by its data-label."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self._in_sources = False
        self._cell: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "table":
            self._in_sources = named.get("id") == "sources"
        elif self._in_sources and tag == "tr" and "row" in (named.get("class") or "").split():
            self.rows.append({"band": named.get("data-band") or ""})
        elif self._in_sources and tag == "td" and self.rows:
            self._cell = named.get("data-label") or ""
            self.rows[-1][self._cell] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None
        elif tag == "table":
            self._in_sources = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self.rows[-1][self._cell] += data


@pytest.mark.integration
def test_the_page_the_api_and_check_agree_row_by_row_on_lifetime_bands(
    run_exporter: StartExporter, tmp_path: Path, pki: PKI, root: Issued
) -> None:
    lifetime_files(tmp_path, pki, root)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    expired = pki.issue(EXPIRED_ROOT, ca=True, not_before=NOW - 900 * DAY, not_after=NOW - 564 * DAY)
    (bundle / "ca-certificates.crt").write_bytes(expired.cert_pem + root.cert_pem)
    config = f"files: [{{paths: ['{tmp_path}/*.pem']}}, {{paths: ['{bundle}/*.crt'], trust_store: true}}]\n"
    exporter: RunningExporter = run_exporter(config)
    exporter.scan_now()
    api = _api(exporter)
    status_code, body = exporter.get("/")
    assert status_code == 200
    page = _SourceRows()
    page.feed(body.decode())
    assert len(page.rows) == len(api["sources"]) == len(LIFETIMES) + 1
    for row, source in zip(page.rows, api["sources"], strict=True):
        cert = source["certs"][0]
        assert row["band"] == source["band"] == cert["band"]
        assert row["days left"] == f"{cert['days_left']:.1f}"
        assert row["lifetime left"].startswith(f"{round(cert['share_left'] * 100)}% of ")
    by_subject = {s["certs"][0]["subject"]: s["certs"][0] for s in api["sources"] if s["kind"] == "file"}
    for name, (lifetime, left, state) in LIFETIMES.items():
        cert = by_subject[name]
        assert cert["lifetime_days"] == pytest.approx(lifetime / DAY)
        assert cert["share_left"] == pytest.approx(left / lifetime, abs=0.01)
        assert {"ok": "OK", "warning": "WARNING", "critical": "CRITICAL"}[cert["band"]] == state
    retired = next(s for s in api["sources"] if s["source"].endswith("ca-certificates.crt"))
    assert retired["band"] == "ok" and [c["band"] for c in retired["certs"]] == ["ok", "retired"]
    assert api["summary"]["retired"] == 1 and api["summary"]["expired"] == 0
    assert api["thresholds"] == {
        "warning_seconds": 28 * 86400.0,
        "warning_share": 0.25,
        "critical_seconds": 7 * 86400.0,
        "critical_share": 0.125,
    }
    verdict = subprocess.run(  # check reads the same view: the same state per certificate
        [sys.executable, "-m", "gunicorn_cert_exporter", "check", "--output", "json", "--config", exporter.config_path],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    checked = {c["subject"]: c["status"] for c in json.loads(verdict.stdout)["checks"] if c["subject"] in LIFETIMES}
    assert checked == {name: state for name, (_, _, state) in LIFETIMES.items()}


def test_the_configured_bands_reach_the_page_and_the_api(
    run_exporter: StartExporter, tmp_path: Path, pki: PKI, root: Issued
) -> None:
    lifetime_files(tmp_path, pki, root)
    exporter: RunningExporter = run_exporter(
        f"bands: {{warning: 28d, critical: 7d}}\nfiles: [{{paths: ['{tmp_path}/*.pem']}}]\n"
    )
    exporter.scan_now()
    api = _api(exporter)
    fresh = next(s for s in api["sources"] if s["certs"][0]["subject"] == "160h-issued-an-hour-ago")
    assert fresh["band"] == "critical"  # fixed bands: a 160-hour certificate is red all its life
    assert api["thresholds"]["warning_share"] is None and api["thresholds"]["critical_seconds"] == 7 * 86400.0
    _, body = exporter.get("/")
    assert "warning below 28d left, critical below 7d" in body.decode()
