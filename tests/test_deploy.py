"""deploy/: Prometheus configs pass promtool, the PrometheusRule is the rules file, manifests are coherent."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from gunicorn_cert_exporter import config
from tests.support import require_tool

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


@pytest.mark.integration
@pytest.mark.parametrize("name", ["scrape-static.yml", "scrape-probe.yml", "scrape-sharded.yml"])
def test_prometheus_scrape_configs_pass_promtool(name: str) -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "check", "config", str(DEPLOY / "prometheus" / name)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr


def test_prometheusrule_holds_exactly_the_rules_file() -> None:
    rule = yaml.safe_load((DEPLOY / "kubernetes" / "prometheusrule.yaml").read_text())
    rules = yaml.safe_load((ROOT / "rules" / "gunicorn-cert-exporter.rules.yml").read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == rules["groups"]


def test_sidecar_shares_the_process_namespace_and_its_config_is_valid() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "deployment.yaml").read_text()))
    by_kind = {d["kind"]: d for d in docs}
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    assert pod["shareProcessNamespace"] is True
    containers = {c["name"]: c for c in pod["containers"]}
    app_command = containers["app"]["command"]
    exporter_config = config.load(by_kind["ConfigMap"]["data"]["config.yaml"])
    target = exporter_config.gunicorn[0]
    assert app_command[0] == "gunicorn"  # exec form: the pidfile names Gunicorn, not a shell
    assert app_command[app_command.index("--pid") + 1] == target.pidfile
    assert app_command[app_command.index("--certfile") + 1] == target.cert_file
    mounts = {m["name"]: m["mountPath"] for m in containers["cert-exporter"]["volumeMounts"]}
    assert target.pidfile is not None
    assert target.cert_file.startswith(mounts["tls"]) and target.pidfile.startswith(mounts["run"])
    assert containers["cert-exporter"]["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_dockerfile_matches_the_readme_install() -> None:
    """The image installs what scripts/install installs: the demo extra, pinned by requirements/runtime.txt."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    readme = (ROOT / "README.md").read_text()
    install = (ROOT / "scripts" / "install").read_text()
    assert "./scripts/install" in readme and "venv_ensure demo requirements/runtime.txt" in install
    # The image installs the same extra with the same pins as the README's install.
    assert "pip install --no-cache-dir --disable-pip-version-check -c requirements/runtime.txt '.[demo]'" in dockerfile
    assert 'ENTRYPOINT ["gunicorn-cert-exporter"]' in dockerfile and "HEALTHCHECK" in dockerfile
    assert "USER 65532" in dockerfile


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """Return the Dockerfile's (INSTRUCTION, arguments) pairs, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_image_serves_the_embedded_default_and_deploy_files_use_its_paths() -> None:
    """`docker run IMAGE` needs no config; the manifests and the unit pass the config path the docs name."""
    instructions = _dockerfile_instructions()
    cmd = [args for name, args in instructions if name == "CMD"]
    assert cmd == ['["serve"]']  # no --config: the image holds no config file, the embedded default serves
    assert instructions[-1][0] == "CMD" and any(name == "EXPOSE" and args == "9793" for name, args in instructions)
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "deployment.yaml").read_text()))
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    exporter = next(c for c in pod["containers"] if c["name"] == "cert-exporter")
    args = exporter["args"]
    config_path = args[args.index("--config") + 1]
    assert config_path == "/etc/gunicorn-cert-exporter/config.yaml"
    mounts = {m["name"]: m["mountPath"] for m in exporter["volumeMounts"]}
    assert config_path.startswith(mounts["exporter-config"] + "/")
    assert exporter["ports"][0]["containerPort"] == 9793
    unit = (DEPLOY / "systemd" / "gunicorn-cert-exporter.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start.startswith("ExecStart=/opt/venv/bin/gunicorn-cert-exporter serve --config " + config_path)
    assert ":9793" in exec_start


def test_control_socket_sidecar_needs_no_shared_process_namespace() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "sidecar-control-socket.yaml").read_text()))
    by_kind = {d["kind"]: d for d in docs}
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    assert "shareProcessNamespace" not in pod
    loaded = config.load(by_kind["ConfigMap"]["data"]["config.yaml"])
    socket_path = loaded.gunicorn[0].control_socket
    assert socket_path is not None and loaded.gunicorn[0].pidfile is None
    containers = {c["name"]: c for c in pod["containers"]}
    app_command = containers["app"]["command"]
    assert app_command[app_command.index("--control-socket") + 1] == socket_path
    mounts = {m["name"]: m for c in containers.values() for m in c["volumeMounts"] if m["name"] == "run"}
    assert mounts and all(not m.get("readOnly") for m in mounts.values())
