"""The version suite: every Gunicorn since 20.1, each from its own pinned environment, rotated under the exporter.

Each cell serves TLS from a real Gunicorn of one version and worker class, watched by the exporter with reload
enabled: the pair is rotated atomically, then /metrics must show drift exactly where the class loads the cert
once per worker, one HUP where (and only where) it is needed, and the new leaf served. The whole matrix, every
class and timings included, is bench/compatibility.py's job (docs/compatibility.md).
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.support import PKI, Cell, Issued, gunicorn_versions, rotate_under, version_tuple


def suite_cells() -> list[Cell]:
    """Return sync and the per-worker classes of every version: gevent, the uvicorn worker, asgi from 24."""
    cells = []
    for version in gunicorn_versions():
        workers = ["sync", "gevent", "uvicorn"] + (["asgi"] if version_tuple(version) >= (24, 0) else [])
        cells += [Cell(version, worker) for worker in workers]
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
        # The workers keep the old context: drift, then exactly one HUP, confirmed, and the workers replaced.
        assert rotation.drift_after_rotation == 1
        assert rotation.signals == (signal.SIGHUP,) and rotation.reload_signals_total == 1
        assert rotation.last_reload_moved
