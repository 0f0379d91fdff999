"""The docs a user reads stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path

from gunicorn_cert_exporter.metrics.catalogue import CATALOGUE
from gunicorn_cert_exporter.reasons import EndpointReason, FileReason, MasterReason, PatternReason, VerifyReason

ROOT = Path(__file__).resolve().parent.parent


def test_every_metric_is_documented_and_every_documented_metric_exists() -> None:
    text = (ROOT / "docs" / "metrics.md").read_text()
    emitted = {s.name + ("_total" if s.kind == "counter" else "") for s in CATALOGUE}
    documented = set(re.findall(r"^\| `(gunicorn_cert_[a-z_]+)`", text, re.MULTILINE))
    documented -= {"gunicorn_cert_probe_success", "gunicorn_cert_probe_duration_seconds"}  # /probe only
    assert documented == emitted


def test_every_reason_is_documented() -> None:
    text = (ROOT / "docs" / "metrics.md").read_text()
    for enum in (FileReason, EndpointReason, VerifyReason, MasterReason, PatternReason):
        for reason in enum:
            assert f"`{reason.value}`" in text, reason


def test_readme_quick_start_has_exactly_the_two_setup_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["./scripts/install && .venv/bin/gunicorn-cert-exporter", "./scripts/test"]
    assert "./scripts/test" in (ROOT / ".ci" / "run").read_text()
