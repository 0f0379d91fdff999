"""Who a Gunicorn master's workers run as: a live worker first, then --user/--group, then the master."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from gunicorn_cert_exporter.sources.access import Identity
from gunicorn_cert_exporter.sources.worker_identity import parse_status, workers_identity
from tests.support import PKI, Gunicorn, searchable_by, unavailable, write_pair

ROOT = Identity(uid=0, gid=0, groups=frozenset({0, 27}))
NOBODY = Identity(uid=65534, gid=65534)


def test_the_file_system_ids_and_groups_are_read_from_proc_status() -> None:
    text = b"Name:\tgunicorn\nUid:\t0\t65534\t65534\t65534\nGid:\t0\t65534\t65534\t65534\nGroups:\t4 27 \n"
    assert parse_status(text) == Identity(uid=65534, gid=65534, groups=frozenset({4, 27}))
    assert parse_status(b"Name:\tx\n") is None


def test_a_live_worker_is_the_best_witness() -> None:
    found = workers_identity(
        master_pid=1, worker_pids=[2], user="nobody", group=None, identity_of={1: ROOT, 2: NOBODY}.get
    )
    assert found is not None and found.identity == NOBODY and found.source == "worker 2"


def test_a_worker_that_has_not_dropped_privileges_yet_is_not_used() -> None:
    table = {1: ROOT, 2: ROOT}
    found = workers_identity(master_pid=1, worker_pids=[2], user="65534", group="65534", identity_of=table.get)
    assert found is not None and found.source == "--user/--group"
    assert found.identity == Identity(uid=65534, gid=65534, groups=ROOT.groups)  # Gunicorn never calls setgroups


def test_without_user_or_group_the_workers_are_the_master() -> None:
    found = workers_identity(master_pid=1, worker_pids=[], user=None, group=None, identity_of={1: NOBODY}.get)
    assert found is not None and found.identity == NOBODY and found.source == "master"


def test_user_without_group_keeps_the_masters_group() -> None:
    """Gunicorn's --group defaults to the master's egid, not the user's primary group."""
    found = workers_identity(master_pid=1, worker_pids=[], user="65534", group=None, identity_of={1: ROOT}.get)
    assert found is not None and (found.identity.uid, found.identity.gid) == (65534, 0)


def _invisible(_pid: int) -> Identity | None:
    return None


def test_nothing_is_known_when_the_master_is_not_visible() -> None:
    assert workers_identity(master_pid=1, worker_pids=[2], user=None, group=None, identity_of=_invisible) is None


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="gce-identity-"))
    os.chmod(base, 0o755)  # noqa: S103  (the workers, as nobody, read the pair from here)
    try:
        yield base
    finally:
        shutil.rmtree(base)


@pytest.mark.integration
def test_a_real_gunicorns_workers_are_seen_as_the_user_they_dropped_to(shared_dir: Path, pki: PKI) -> None:
    if os.getuid() != 0:
        unavailable("root (Gunicorn's --user needs it)", ci_must="CI runs the suite as root")
    write_pair(pki.leaf(pki.ca()), shared_dir / "cert.pem", shared_dir / "key.pem")
    os.chmod(shared_dir / "key.pem", 0o644)  # a test key, readable by the workers
    with searchable_by(65534, Path(sys.prefix)):  # the workers import from this environment, as nobody
        server = Gunicorn(
            shared_dir,
            worker_class="sync",
            cert=shared_dir / "cert.pem",
            key=shared_dir / "key.pem",
            args=["--user", "nobody", "--group", "nogroup"],
        )
        try:
            workers = [child.pid for child in psutil.Process(server.process.pid).children()]
            found = workers_identity(master_pid=server.process.pid, worker_pids=workers, user="nobody", group="nogroup")
            assert found is not None and found.source.startswith("worker ")
            assert (found.identity.uid, found.identity.gid) == (65534, 65534)
        finally:
            server.stop()
