"""Kubeconfigs written by kubectl: each cluster's and user's certificate with its entry; nothing secret, nothing run."""

from __future__ import annotations

import os
import subprocess
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from gunicorn_cert_exporter import check, status
from gunicorn_cert_exporter.model import FileResult, Snapshot
from gunicorn_cert_exporter.reasons import FileReason
from gunicorn_cert_exporter.scanning.store import Store
from gunicorn_cert_exporter.sources.files import FileScanner, Wanted
from tests.support import PKI, Issued, require_tool
from tests.test_collector import registry_for


def _kubectl(config: Path, *args: str) -> None:
    env = {**os.environ, "KUBECONFIG": str(config)}
    subprocess.run([require_tool("kubectl"), "config", *args], env=env, check=True, capture_output=True, timeout=60)


def _not_after(pem: Path) -> float:
    out = subprocess.run(
        [require_tool("openssl"), "x509", "-noout", "-enddate", "-in", str(pem)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    when = out.strip().split("=", 1)[1].replace(" GMT", " +0000")
    parts = when.split()
    return parsedate_to_datetime(f"{parts[1]} {parts[0]} {parts[3]} {parts[2]} {parts[4]}").timestamp()


@pytest.fixture
def kube(tmp_path: Path, pki: PKI, root: Issued) -> tuple[Path, dict[str, Path]]:
    """Two clusters and two users (embedded, referenced, one relative), a user whose file is missing, an exec user."""
    pki_dir = tmp_path / "pki"
    pki_dir.mkdir()
    made = {
        "ca": pki.ca("prod CA"),
        "ca2": pki.ca("stage CA"),
        "admin": pki.leaf(root, "kubernetes-admin"),
        "ops": pki.leaf(root, "ops"),
    }
    paths = {}
    for name, issued in made.items():
        paths[name] = pki_dir / f"{name}.pem"
        paths[name].write_bytes(issued.cert_pem)
    (pki_dir / "admin.key").write_bytes(made["admin"].key_pem)
    config = tmp_path / "config"
    _kubectl(config, "set-cluster", "prod", "--server=https://127.0.0.1:1", f"--certificate-authority={paths['ca']}",
             "--embed-certs=true")  # fmt: skip
    _kubectl(config, "set-cluster", "stage", "--server=https://127.0.0.1:2", f"--certificate-authority={paths['ca2']}")
    _kubectl(config, "set-credentials", "kubernetes-admin", f"--client-certificate={paths['admin']}",
             f"--client-key={pki_dir / 'admin.key'}", "--embed-certs=true")  # fmt: skip
    _kubectl(config, "set-credentials", "ops", f"--client-key={pki_dir / 'admin.key'}")
    _kubectl(config, "set", "users.ops.client-certificate", "pki/ops.pem")  # relative: to the kubeconfig's directory
    _kubectl(config, "set-credentials", "ghost", f"--client-certificate={pki_dir / 'missing.pem'}")
    marker = tmp_path / "exec-ran"
    _kubectl(config, "set-credentials", "plugin", "--exec-api-version=client.authentication.k8s.io/v1",
             "--exec-command=/bin/sh", "--exec-arg=-c", f"--exec-arg=touch {marker}")  # fmt: skip
    return config, paths


def _scan(config: Path) -> FileResult:
    (result,) = FileScanner(clock=lambda: 0.0, max_size=1 << 20).scan([Wanted(str(config))])
    return result


@pytest.mark.integration
def test_kubectl_written_kubeconfig_reports_four_certificates_each_with_its_entry(
    kube: tuple[Path, dict[str, Path]],
) -> None:
    config, paths = kube
    result = _scan(config)
    by_entry = {result.entry(i): cert.not_after for i, cert in enumerate(result.certs)}
    assert by_entry == {
        "cluster:prod": _not_after(paths["ca"]),
        "cluster:stage": _not_after(paths["ca2"]),
        "user:kubernetes-admin": _not_after(paths["admin"]),
        "user:ops": _not_after(paths["ops"]),
    }
    assert [(p.entry, p.reason) for p in result.entry_errors] == [("user:ghost", FileReason.NOT_FOUND)]
    assert not (config.parent / "exec-ran").exists()  # the exec plugin user ran nothing


@pytest.mark.integration
def test_the_embedded_key_is_in_no_metric_and_no_status(kube: tuple[Path, dict[str, Path]]) -> None:
    config, _ = kube
    key_data = next(line for line in config.read_text().splitlines() if "client-key-data" in line).split(":")[1]
    store = Store()
    result = _scan(config)
    store.update(files=(result,))
    exposition = "\n".join(str(m) for m in registry_for(store).collect())
    built = status.build(Snapshot(files=(result,)), now=0.0)
    view = status.document(built)
    sources = {row.source for row in check.rows(built)}  # `check` names the entry beside the path
    assert f"{config} [user:kubernetes-admin]" in sources and f"{config} [cluster:prod]" in sources
    for text in (exposition, repr(result), str(view)):
        assert key_data.strip()[:40] not in text
    assert (
        registry_for(store).get_sample_value(
            "gunicorn_cert_file_entry_error", {"path": str(config), "entry": "user:ghost", "reason": "not_found"}
        )
        == 1
    )


@pytest.mark.integration
def test_a_reference_to_a_fifo_is_an_error_of_that_entry_and_never_blocks(kube: tuple[Path, dict[str, Path]]) -> None:
    config, paths = kube
    paths["ops"].unlink()
    os.mkfifo(paths["ops"])  # nobody writes: an open without O_NONBLOCK, or a read, would hang the scan
    result = _scan(config)
    problems = {p.entry: p.reason for p in result.entry_errors}
    assert problems["user:ops"] is FileReason.NOT_REGULAR_FILE
    assert {result.entry(i) for i in range(len(result.certs))} == {"cluster:prod", "cluster:stage",
                                                                    "user:kubernetes-admin"}  # fmt: skip


def test_a_referenced_file_that_changes_is_read_again(tmp_path: Path, pki: PKI, root: Issued) -> None:
    cert = tmp_path / "client.pem"
    cert.write_bytes(pki.leaf(root, "first").cert_pem)
    config = tmp_path / "kubelet.conf"
    config.write_text(
        "apiVersion: v1\nkind: Config\nusers:\n- name: node\n  user:\n    client-certificate: client.pem\n"
    )
    scanner = FileScanner(clock=lambda: 0.0, max_size=1 << 20)
    (first,) = scanner.scan([Wanted(str(config))])
    cert.write_bytes(pki.leaf(root, "second").cert_pem)  # kubelet rotates its client certificate
    (second,) = scanner.scan([Wanted(str(config))])
    assert [c.subject_cn for c in first.certs] == ["first"] and [c.subject_cn for c in second.certs] == ["second"]
