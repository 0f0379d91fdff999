"""rules/: promtool accepts the rules, every alert is unit-tested firing and not firing, runbooks exist."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import require_tool

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules" / "gunicorn-cert-exporter.rules.yml"


def alerts() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


@pytest.mark.integration
def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool")
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


@pytest.mark.integration
def test_promtool_unit_tests_pass() -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "test", "rules", "tests.yml"], cwd=RULES.parent, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    cases = yaml.safe_load((RULES.parent / "tests.yml").read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {str(a["alert"]) for a in alerts()}
    assert firing == names and quiet == names


def test_every_alert_has_severity_summary_description_and_a_runbook_that_exists() -> None:
    runbooks = (ROOT / "docs" / "runbooks.md").read_text()
    anchors = set(re.findall(r"^## ([a-z0-9-]+)$", runbooks, re.MULTILINE))
    for alert in alerts():
        labels, annotations = alert["labels"], alert["annotations"]
        assert labels["severity"] in ("warning", "critical"), alert["alert"]
        assert annotations["summary"] and annotations["description"], alert["alert"]
        anchor = str(annotations["runbook_url"]).rpartition("#")[2]
        assert anchor in anchors, (alert["alert"], anchor)
