"""The version suite: every Gunicorn since 20.1, each from its own pinned environment, rotated under the exporter.

Each cell serves TLS from a real Gunicorn of one version and worker class, watched by the exporter with reload
enabled: the pair is rotated atomically, then /metrics must show drift exactly where the class loads the cert
once per worker, one HUP where (and only where) it is needed, and the new leaf served. The whole matrix, every
class and timings included, is bench/compatibility.py's job (docs/compatibility.md).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support import (
    PKI,
    REPO,
    Cell,
    Issued,
    gunicorn_python,
    gunicorn_versions,
    rotate_under,
    version_tuple,
)


def suite_cells() -> list[Cell]:
    """Return sync and the per-worker classes of every version (gevent, uvicorn, asgi from 24); the control socket."""
    cells = []
    for version in gunicorn_versions():
        workers = ["sync", "gevent", "uvicorn"] + (["asgi"] if version_tuple(version) >= (24, 0) else [])
        cells += [Cell(version, worker) for worker in workers]
    # Gunicorn 25.1+: the same rotation proved, watched and reloaded through the control socket, with no pidfile.
    cells += [Cell(v, "asgi", channel="control_socket") for v in gunicorn_versions() if version_tuple(v) >= (25, 1)]
    return cells


def test_the_suite_covers_every_version_required() -> None:
    """Every version the project supports has pins, so a missing file cannot quietly shrink the suite."""
    required = {"20.1.0", "21.2.0", "22.0.0", "23.0.0", "27.0.1"}
    versions = gunicorn_versions()
    assert required <= set(versions)
    for series in ("24.1", "25", "26"):
        assert any(v.startswith(series + ".") for v in versions), series
    assert any(version_tuple(v) >= (25, 1) for v in versions)


@pytest.mark.integration
@pytest.mark.parametrize("cell", suite_cells(), ids=lambda cell: cell.id)
def test_rotation_drifts_and_reloads_as_the_worker_class_dictates(
    cell: Cell, tmp_path: Path, pki: PKI, root: Issued
) -> None:
    rotation = rotate_under(cell, tmp_path, pki=pki, root=root)
    assert (rotation.master_up, rotation.workers) == (1, 2)
    assert rotation.new_leaf_served
    assert rotation.drift_after_reload == 0
    assert rotation.reload_failures_total == 0
    if cell.reads_per_connection:
        # The new pair is read on the next connection: no drift, nothing to signal, the workers stay.
        assert rotation.drift_after_rotation == 0
        assert rotation.signals == () and rotation.reload_signals_total == 0
        assert not rotation.last_reload_moved
    else:
        # The workers keep the old context: drift, then exactly one reload, confirmed, and the workers replaced:
        # a SIGHUP to the proven master, or the `reload` command on the control socket (no signal from us at all).
        assert rotation.drift_after_rotation == 1
        expected = () if cell.channel == "control_socket" else (signal.SIGHUP,)
        assert rotation.signals == expected and rotation.reload_signals_total == 1
        assert rotation.last_reload_moved


def test_a_missing_environment_fails_under_ci_and_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under CI a version whose environment was not built must fail its cells, never skip them."""
    monkeypatch.setenv("CI", "true")
    with pytest.raises(BaseException) as under_ci:  # a skip is a BaseException too: catch it to fail on it
        gunicorn_python("0.0.1")
    assert isinstance(under_ci.value, pytest.fail.Exception)
    assert "no environment for Gunicorn 0.0.1" in str(under_ci.value)
    monkeypatch.delenv("CI")
    with pytest.raises(BaseException) as locally:
        gunicorn_python("0.0.1")
    assert isinstance(locally.value, pytest.skip.Exception)


@pytest.mark.integration
def test_gunicorn_envs_builds_once_and_again_only_when_the_pins_change(tmp_path: Path) -> None:
    pins, envs = tmp_path / "pins", tmp_path / "envs"
    pins.mkdir()
    (pins / "9.9.9.txt").write_text("# requires: setproctitle\nsetproctitle==1.3.8\n")
    environ = {**os.environ, "GCE_GUNICORN_PINS": str(pins), "GCE_GUNICORN_ENVS": str(envs)}

    def build() -> str:
        script = str(REPO / "scripts" / "gunicorn-envs")
        done = subprocess.run([script], check=False, env=environ, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "9.9.9: built" in build()
    installed = subprocess.run(
        [str(envs / "9.9.9" / "bin" / "python"), "-c", "import setproctitle; print(setproctitle.__version__)"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert installed.stdout.strip() == "1.3.8"
    assert "9.9.9: up to date" in build()
    (pins / "9.9.9.txt").write_text("# requires: setproctitle\n# a changed comment is a change\nsetproctitle==1.3.8\n")
    assert "9.9.9: built" in build()
