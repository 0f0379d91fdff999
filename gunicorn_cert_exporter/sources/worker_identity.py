"""Who a Gunicorn master's workers run as: the identity its certificate files are read with.

Best: a live worker's own uid, gid and groups from ``/proc/PID/status`` (the file-system ids the kernel checks).
A worker forked a moment ago still has the master's uid until it drops privileges, so a worker with the master's
uid while ``--user`` names another is not used. Next: Gunicorn's ``--user``/``--group`` with the master's
supplementary groups (Gunicorn calls only setgid/setuid unless ``--initgroups``, which takes the user's groups).
Last: the master's own identity (no ``--user``: the workers keep it).
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gunicorn_cert_exporter.safe_read import read_regular
from gunicorn_cert_exporter.sources.access import Identity

_STATUS_CAP = 16 * 1024


@dataclass(frozen=True, slots=True)
class WorkerIdentity:
    """The identity the workers read their files as, and where it was learned (for the page and the API)."""

    identity: Identity
    source: str  # "worker PID", "--user/--group", "master"


def parse_status(text: bytes) -> Identity | None:
    """Read the file-system uid and gid and the supplementary groups from /proc/PID/status."""
    fields: dict[str, list[str]] = {}
    for line in text.decode(errors="replace").splitlines():
        name, _, rest = line.partition(":")
        if name in ("Uid", "Gid", "Groups"):
            fields[name] = rest.split()
    try:
        uid, gid = int(fields["Uid"][3]), int(fields["Gid"][3])  # real, effective, saved, file system
        groups = frozenset(int(g) for g in fields.get("Groups", []))
    except (KeyError, IndexError, ValueError):
        return None
    return Identity(uid=uid, gid=gid, groups=groups)


def process_identity(pid: int) -> Identity | None:
    """Return a process's identity, or None when /proc does not tell (gone, or another PID namespace)."""
    try:
        return parse_status(read_regular(f"/proc/{pid}/status", _STATUS_CAP))
    except OSError:
        return None


def _uid_of(user: str) -> int | None:
    if user.isdigit():
        return int(user)
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def _gid_of(group: str) -> int | None:
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def workers_identity(
    *,
    master_pid: int,
    worker_pids: Sequence[int],
    user: str | None,
    group: str | None,
    initgroups: bool = False,
    identity_of: Callable[[int], Identity | None] = process_identity,
) -> WorkerIdentity | None:
    """Decide who the workers are; None when nothing can be known (the master's /proc is not visible)."""
    master = identity_of(master_pid)
    wanted_uid = _uid_of(user) if user else None
    for pid in worker_pids:
        worker = identity_of(pid)
        if worker is None or master is None:
            continue
        if wanted_uid is not None and wanted_uid != master.uid and worker.uid == master.uid:
            continue  # forked a moment ago: it has not dropped privileges yet
        return WorkerIdentity(worker, f"worker {pid}")
    if master is None:
        return None
    if user is None and group is None:
        return WorkerIdentity(master, "master")
    uid = wanted_uid if wanted_uid is not None else master.uid
    configured_gid = (_gid_of(group) if group else None) or master.gid  # Gunicorn's default: the master's egid
    if initgroups and user:
        # gunicorn/util.set_owner_process: with --initgroups it calls os.initgroups(user, gid) and never setgid.
        groups = _initgroups(user, configured_gid)
        return WorkerIdentity(Identity(uid=uid, gid=master.gid, groups=groups), "--user/--initgroups")
    return WorkerIdentity(Identity(uid=uid, gid=configured_gid, groups=master.groups), "--user/--group")


def _initgroups(user: str, gid: int) -> frozenset[int]:
    name = user
    if user.isdigit():
        try:
            name = pwd.getpwuid(int(user)).pw_name
        except KeyError:
            return frozenset({gid})
    try:
        return frozenset(os.getgrouplist(name, gid))
    except (KeyError, OSError):
        return frozenset({gid})
