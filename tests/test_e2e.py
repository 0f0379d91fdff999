"""End to end: a real Prometheus scrapes the exporter and runs our rules; a real Alertmanager gets the alert;
every dashboard query runs against that Prometheus; every metric named in a rule or panel exists."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.acme_support import EXPLANATION, HOUR, AcmeServer, Reply, acme_leaf, utc_now
from tests.support import (
    DAY,
    NOW,
    PKI,
    Gunicorn,
    Issued,
    RunningExporter,
    StartExporter,
    TLSServer,
    eventually,
    free_port,
    require_tool,
    serve_in_thread,
    server_context,
)

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules" / "gunicorn-cert-exporter.rules.yml"
DASHBOARD = ROOT / "dashboards" / "gunicorn-cert-exporter.json"
JOB = "gunicorn-cert-exporter"


class Webhook:
    """Alertmanager's receiver: records every notification it posts."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.received = received
        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        serve_in_thread(self.server)


def _query(prometheus: str, expr: str) -> dict[str, Any]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    answer: dict[str, Any]  # Prometheus's JSON answer
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 503:  # Prometheus is still starting (TSDB): not an answer yet
            raise ConnectionError("Prometheus not ready") from exc
        answer = json.loads(exc.read())
    return answer


@pytest.fixture
def stack(
    run_exporter: StartExporter, tmp_path: Path, tls_server: type[TLSServer], pki: PKI, root: Issued
) -> Iterator[tuple[str, Webhook, RunningExporter]]:
    """An exporter with seeded data, scraped by Prometheus, alerting to Alertmanager, which calls a webhook."""
    prometheus_bin, alertmanager_bin = require_tool("prometheus"), require_tool("prometheus-alertmanager")
    soon = pki.leaf(root, "expiring.test", not_before=NOW - 87 * DAY, not_after=NOW + 3 * DAY)  # 90 days, 3 left
    (tmp_path / "expiring.pem").write_bytes(soon.cert_pem)
    (tmp_path / "key.pem").write_bytes(soon.key_pem)
    served = pki.leaf(root, "old.test", not_after=NOW + 5 * DAY)
    server = tls_server("127.0.0.1", context=server_context((served,)))
    (tmp_path / "broken.pem").write_bytes(b"junk")
    crl_dir = tmp_path / "crl"  # the root's CRL beside the root, revoking one leaf; a kubeconfig entry that fails
    crl_dir.mkdir()
    (crl_dir / "root.pem").write_bytes(root.cert_pem)
    revoked = pki.leaf(root, "revoked.test")
    (crl_dir / "revoked.pem").write_bytes(revoked.cert_pem)
    entry = x509.RevokedCertificateBuilder().serial_number(revoked.cert.serial_number).revocation_date(NOW).build()
    builder = x509.CertificateRevocationListBuilder().issuer_name(root.cert.subject).last_update(NOW - DAY)
    builder = builder.next_update(NOW + 7 * DAY).add_revoked_certificate(entry)
    crl = builder.sign(root.key, hashes.SHA256())
    (crl_dir / "root.crl").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    (crl_dir / "admin.conf").write_text("kind: Config\nusers:\n- {name: gone, user: {client-certificate: gone.pem}}\n")
    (tmp_path / "trust").mkdir()
    (tmp_path / "trust" / "ca-certificates.crt").write_bytes(root.cert_pem)
    live_dir = tmp_path / "live"
    live_dir.mkdir()
    live_leaf = pki.leaf(root)
    (live_dir / "cert.pem").write_bytes(live_leaf.cert_pem)
    (live_dir / "key.pem").write_bytes(live_leaf.key_pem)
    live = Gunicorn(live_dir, worker_class="sync", cert=live_dir / "cert.pem", key=live_dir / "key.pem")
    acme = AcmeServer("127.0.0.1")  # ARI (RFC 9773): the CA asks for an early renewal, with its explanation
    asked = acme_leaf(root, lifetime=90 * DAY, left=81 * DAY, cn="ari.test")
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "cert.pem").write_bytes(asked.cert_pem)
    acme.answer(asked, Reply(utc_now() - 2 * HOUR, utc_now() - HOUR, EXPLANATION))
    exporter: RunningExporter = run_exporter(
        "scan: {interval: 1s, jitter: 0%}\n"
        f"files: [{{paths: ['{tmp_path}/*.pem']}}, {{paths: ['{crl_dir}/*']}}, "
        f"{{paths: ['{tmp_path}/trust/*.crt'], trust_store: true}}, "
        f"{{paths: ['{tmp_path}/acme/cert.pem'], acme: {{directory: '{acme.directory}'}}}}]\n"
        f"endpoints: [{{address: '{server.address}', server_name: localhost}}, "
        "{address: '127.0.0.1:1', timeout: 1s}]\n"
        f"gunicorn: [{{name: app, cert_file: {tmp_path}/expiring.pem, key_file: {tmp_path}/key.pem, "
        f"endpoint: '{server.address}', server_name: localhost, pid: 999999}}, "
        f"{{name: live, cert_file: {live_dir}/cert.pem, key_file: {live_dir}/key.pem, endpoint: '{live.address}', "
        f"server_name: localhost, pidfile: {live.pidfile}}}]\n"
        "probe: {allow: ['127.0.0.1:*']}\n"
        f"acme: {{certbot_config_dir: null, ari: {{enabled: true, interval: 5s, allow: ['127.0.0.1']}}}}\n",
        schedule=True,
    )
    # The shipped rules with every `for:` at 0 so the test need not wait an hour; the expressions are unchanged.
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    webhook = Webhook()
    am_port, prom_port = free_port(), free_port()
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump({
        "route": {"receiver": "hook", "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h",
                  "group_by": ["alertname"]},
        "receivers": [{"name": "hook", "webhook_configs": [{"url": f"http://127.0.0.1:{webhook.port}/"}]}],
    }))  # fmt: skip
    exporter_address = exporter.url.removeprefix("http://")
    probe_job = yaml.safe_load((ROOT / "deploy" / "prometheus" / "scrape-probe.yml").read_text())["scrape_configs"][0]
    probe_job.update(scrape_interval="1s", scrape_timeout="1s", static_configs=[{"targets": [server.address]}])
    probe_job["relabel_configs"][-1]["replacement"] = exporter_address
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [exporter_address]}]}, probe_job],
    }))  # fmt: skip
    processes = [
        subprocess.Popen(
            [alertmanager_bin, f"--config.file={tmp_path / 'alertmanager.yml'}", f"--storage.path={tmp_path / 'am'}",
             f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [prometheus_bin, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ),
    ]  # fmt: skip
    prometheus = f"http://127.0.0.1:{prom_port}"
    try:
        eventually(
            lambda: _query(prometheus, f'up{{job="{JOB}"}} == 1')["data"]["result"],
            "Prometheus to scrape the exporter",
        )
        eventually(
            lambda: _query(prometheus, "gunicorn_cert_fingerprint_mismatch == 1")["data"]["result"],
            "drift to be scraped",
        )
        eventually(
            lambda: _query(prometheus, "gunicorn_cert_ari_renewal_requested == 1")["data"]["result"],
            "the CA's renewal request to be scraped",
        )
        yield prometheus, webhook, exporter
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=15)
        webhook.server.shutdown()
        live.stop()
        acme.close()


@pytest.mark.integration
def test_expiring_cert_alert_reaches_a_real_alertmanager(stack: tuple[str, Webhook, RunningExporter]) -> None:
    _, webhook, _ = stack

    def delivered() -> list[dict[str, Any]]:
        return [
            alert
            for note in webhook.received
            for alert in note["alerts"]
            if alert["labels"]["alertname"] == "GunicornCertFileExpiringCritical"
        ]

    alerts = eventually(delivered, "the expiring-cert alert to reach the Alertmanager webhook")
    labels = alerts[0]["labels"]
    assert labels["severity"] == "critical" and labels["path"].endswith("expiring.pem")
    assert labels["job"] == JOB
    names = {a["labels"]["alertname"] for n in webhook.received for a in n["alerts"]}
    assert "GunicornCertDrift" not in names  # drift is minutes old, the rule wants 15 of them


@pytest.mark.integration
def test_the_cas_renewal_request_reaches_a_real_alertmanager(stack: tuple[str, Webhook, RunningExporter]) -> None:
    _, webhook, _ = stack

    def delivered() -> list[dict[str, Any]]:
        return [
            alert
            for note in webhook.received
            for alert in note["alerts"]
            if alert["labels"]["alertname"] == "GunicornCertAcmeRenewalRequested"
        ]

    labels = eventually(delivered, "the ARI alert to reach the Alertmanager webhook")[0]["labels"]
    assert labels["severity"] == "critical" and labels["source"].endswith("acme/cert.pem")
    assert labels["explanation_url"] == EXPLANATION


def _panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
    queries += [(a["name"], a["expr"]) for a in dashboard["annotations"]["list"]]
    queries += [(v["name"], v["query"]["query"]) for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return queries


def _grafana_to_promql(expr: str) -> str:
    """Substitute Grafana's variables the way Grafana would for 'All'."""
    match = re.match(r"label_values\((.*),\s*(\w+)\)$", expr)
    if match:  # a variable query: Grafana asks for the series behind it
        expr = match.group(1)
    for name in ("job", "instance", "target"):
        expr = expr.replace(f"${name}", ".*")
    return expr.replace("$__rate_interval", "1m").replace("$__interval", "15s").replace("$__range", "1h")


# Panels whose data the stack seeds; the rest (reload annotations) must run without error and may be empty.
SEEDED_EMPTY_OK = {"Reloads sent by the exporter", "Workers replaced"}


@pytest.mark.integration
def test_every_dashboard_query_runs_and_shows_the_seeded_data(stack: tuple[str, Webhook, RunningExporter]) -> None:
    prometheus, _, _ = stack
    for title, expr in _panel_queries():
        answer = _query(prometheus, _grafana_to_promql(expr))
        assert answer["status"] == "success", (title, expr, answer)
        if title not in SEEDED_EMPTY_OK:
            assert answer["data"]["result"], (title, expr)


@pytest.mark.integration
def test_probe_relabeling_from_deploy_scrapes_each_target_through_the_exporter(
    stack: tuple[str, Webhook, RunningExporter],
) -> None:
    prometheus, _, _ = stack
    result = eventually(
        lambda: _query(prometheus, 'gunicorn_cert_probe_success{job="gunicorn-cert-probe"} == 1')["data"]["result"],
        "a /probe scrape through the shipped relabeling",
    )
    instance = result[0]["metric"]["instance"]
    assert instance.startswith("127.0.0.1:")  # the probed target, not the exporter, names the series


def test_dashboard_is_importable_as_is() -> None:
    text = DASHBOARD.read_text()
    assert "${DS_" not in text and "__inputs" not in text
    dashboard = json.loads(text)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert {"job", "instance", "target"} <= set(variables)
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


@pytest.mark.integration
def test_every_metric_in_rules_and_panels_exists_in_the_real_output(
    stack: tuple[str, Webhook, RunningExporter],
) -> None:
    _, _, exporter = stack
    exposed = {name.split("{")[0] for name in exporter.metrics()}
    exprs = [e for _, e in _panel_queries()]
    exprs += [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    named = {m for e in exprs for m in re.findall(r"\b(gunicorn_cert_[a-z_]+)\b", e)}
    missing = named - exposed
    assert not missing, missing
