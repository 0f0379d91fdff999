"""The shipped alert rules and the dashboard judge by the exporter's own rule: a real Prometheus agrees with `check`."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import (
    DAY,
    NOW,
    PKI,
    Issued,
    RunningExporter,
    StartExporter,
    eventually,
    free_port,
    lifetime_files,
    require_tool,
)

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules" / "gunicorn-cert-exporter.rules.yml"
DASHBOARD = ROOT / "dashboards" / "gunicorn-cert-exporter.json"
OS_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
SEVERITY = {"OK": "", "WARNING": "warning", "CRITICAL": "critical"}
pytestmark = [
    pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive"),  # an OS root
    pytest.mark.integration,  # runs check, promtool and Prometheus
]
BAND_VALUE = {"ok": 0, "warning": 1, "critical": 2, "expired": 3, "retired": 4}  # the dashboard's band column


def _get(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 503:  # Prometheus is still starting
            raise ConnectionError("Prometheus not ready") from exc
        raise
    return answer


@pytest.fixture
def watched(run_exporter: StartExporter, tmp_path: Path, pki: PKI, root: Issued) -> RunningExporter:
    """Every lifetime of the issue; the OS trust store and a bundle with an expired root, both as trust stores; a
    copy of those two as a private bundle (whatever roots this machine's bundle holds, one of them is expired)."""
    (tmp_path / "lifetimes").mkdir()
    lifetime_files(tmp_path / "lifetimes", pki, root)
    expired = pki.issue("Expired Root", ca=True, not_before=NOW - 900 * DAY, not_after=NOW - 564 * DAY)
    (tmp_path / "trust").mkdir()
    (tmp_path / "trust" / "roots.crt").write_bytes(expired.cert_pem + root.cert_pem)
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "ca-bundle.crt").write_bytes(OS_BUNDLE.read_bytes() + expired.cert_pem)
    exporter: RunningExporter = run_exporter(
        f"files: [{{paths: ['{tmp_path}/lifetimes/*.pem', '{tmp_path}/private/*.crt']}},"
        f" {{paths: ['{OS_BUNDLE}', '{tmp_path}/trust/*.crt'], trust_store: true}}]\n"
    )
    exporter.scan_now()
    return exporter


@pytest.fixture
def prometheus(watched: RunningExporter, tmp_path: Path) -> Iterator[str]:
    """A real Prometheus scraping the exporter every second and evaluating the shipped rules file as it is."""
    binary, port = require_tool("prometheus"), free_port()
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "gce", "static_configs": [{"targets": [watched.url.removeprefix("http://")]}]}],
    }))  # fmt: skip
    process = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=15)


def _check_states(exporter: RunningExporter) -> dict[str, str]:
    """Run `check` over the exporter's config: the worst state of each file."""
    command = [sys.executable, "-m", "gunicorn_cert_exporter", "check", "--output", "json"]
    result = subprocess.run(
        [*command, "--config", str(exporter.config_path)], capture_output=True, text=True, timeout=120, check=False
    )
    rank = {"OK": 0, "WARNING": 1, "CRITICAL": 2}
    worst: dict[str, str] = {}
    for row in json.loads(result.stdout)["checks"]:
        if rank[row["status"]] >= rank[worst.get(row["source"], "OK")]:
            worst[row["source"]] = row["status"]
    return worst


def _file_alerts(prometheus: str) -> dict[str, str]:
    """The worst severity of the pending or firing file alerts, per path."""
    worst: dict[str, str] = {}
    for alert in _get(f"{prometheus}/api/v1/alerts")["data"]["alerts"]:
        labels = alert["labels"]
        pending_or_firing = "path" in labels and alert["state"] in ("pending", "firing")
        if pending_or_firing and worst.get(labels["path"]) != "critical":
            worst[labels["path"]] = labels["severity"]
    return worst


def test_alerts_have_the_severities_of_check_file_by_file(prometheus: str, watched: RunningExporter) -> None:
    expected = {path: SEVERITY[state] for path, state in _check_states(watched).items()}
    trust_stores = (str(OS_BUNDLE), f"{watched.config_path.parent}/trust/roots.crt")
    assert [expected[path] for path in trust_stores] == ["", ""]
    assert expected[f"{watched.config_path.parent}/private/ca-bundle.crt"] == "critical"
    problems = {path for path, severity in expected.items() if severity}

    def all_alerts_in() -> dict[str, str] | None:
        alerts = _file_alerts(prometheus)
        return alerts if set(alerts) >= problems else None

    # Every expected alert is in, so the rules ran over the scraped series: an OK file with no alert is a finding.
    alerts = eventually(all_alerts_in, "the rules to evaluate the scraped certificates")
    assert {path: alerts.get(path, "") for path in expected} == expected
    assert sorted(set(expected.values())) == ["", "critical", "warning"]  # each outcome is represented


def _panel_expr(title_start: str, ref: str) -> str:
    panel = next(p for p in json.loads(DASHBOARD.read_text())["panels"] if p["title"].startswith(title_start))
    expr = next(t["expr"] for t in panel["targets"] if t["refId"] == ref)
    return str(expr).replace("$job", ".*").replace("$instance", ".*")


def test_the_dashboard_band_column_is_the_exporters_band(prometheus: str, watched: RunningExporter) -> None:
    status_code, body = watched.get("/api/v1/status")
    assert status_code == 200
    bands = {
        (source["source"], str(cert["index"])): BAND_VALUE[cert["band"]]
        for source in json.loads(body)["sources"]
        for cert in source["certs"]
    }
    query = _panel_expr("Soonest-expiring certificates in files", "C")

    def answered() -> list[dict[str, Any]] | None:
        result: list[dict[str, Any]] = _get(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query}))[
            "data"
        ]["result"]
        return result if len(result) == 25 else None  # the 25 soonest, once the series are scraped

    shown = {(r["metric"]["path"], r["metric"]["index"]): int(float(r["value"][1])) for r in eventually(answered, "")}
    assert shown == {key: bands[key] for key in shown}
    assert set(shown.values()) == {0, 1, 2, 3, 4}  # ok, warning, critical, expired, retired: every band shown
    warn_or_worse = _get(
        f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": _panel_expr("Warning or worse", "A")})
    )["data"]["result"]
    counted = [b for b in bands.values() if b in (1, 2, 3)]
    assert int(float(warn_or_worse[0]["value"][1])) == len(counted)


def test_only_trust_store_files_carry_the_trust_store_series_and_a_reload_moves_it(watched: RunningExporter) -> None:
    trust = watched.config_path.parent / "trust" / "roots.crt"
    expected = {f'gunicorn_cert_file_trust_store{{path="{path}"}}': 1.0 for path in (OS_BUNDLE, trust)}
    for _ in range(2):  # the first scan parses the bundle, the second finds it unchanged and keeps what it read
        samples = watched.metrics()
        assert {name: v for name, v in samples.items() if name.startswith("gunicorn_cert_file_trust_store")} == expected
        watched.scan_now()
    # The flag comes from the entry, not from what the file held when first read: unchanged files follow a reload.
    watched.config_path.write_text(watched.config_path.read_text().replace("trust_store: true", "trust_store: false"))
    watched.service.reload()
    watched.scan_now()
    assert not any(name.startswith("gunicorn_cert_file_trust_store") for name in watched.metrics())
