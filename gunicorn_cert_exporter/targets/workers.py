"""What a target's workers can read: their identity, then the kernel's answer for cert, key and --ca-certs.

Gunicorn's workers load the files after dropping privileges, so a renewed key the workers can't read makes the
next HUP an outage (``-k asgi`` even serves plain HTTP on the TLS port). This asks the question before the HUP.
"""

from __future__ import annotations

from collections.abc import Callable

from gunicorn_cert_exporter.config import GunicornTarget
from gunicorn_cert_exporter.model import MasterState
from gunicorn_cert_exporter.runbook import AccessFile, FileAccess, WorkerAccess
from gunicorn_cert_exporter.sources import discovery, gunicorn
from gunicorn_cert_exporter.sources.access import Identity, can_read, key_exposed
from gunicorn_cert_exporter.sources.gunicorn_settings import Learned
from gunicorn_cert_exporter.sources.worker_identity import process_identity, workers_identity


def _local_view(master: MasterState) -> bool:
    """Tell whether /proc here shows this master (a control socket may reach one in another PID namespace)."""
    if master.channel != "control_socket":
        return True  # proven through /proc itself
    assert master.pid is not None  # noqa: S101  (the caller checked master.up)
    here = gunicorn.inspect(master.pid)
    return here.up and {w.pid for w in here.workers} == {w.pid for w in master.workers}


def observe_access(
    target: GunicornTarget,
    master: MasterState,
    *,
    told: Callable[[int], Learned | None] = discovery.told,
    identity_of: Callable[[int], Identity | None] = process_identity,
) -> WorkerAccess | None:
    """Return who the workers are and what they can read; None when no master is proven or /proc won't say."""
    if not master.up or master.pid is None or not _local_view(master):
        return None
    learned = told(master.pid)
    settings = learned.settings if learned is not None else None
    found = workers_identity(
        master_pid=master.pid,
        worker_pids=[w.pid for w in master.workers],
        user=settings.user if settings else None,
        group=settings.group if settings else None,
        initgroups=bool(settings and settings.initgroups),
        identity_of=identity_of,
    )
    if found is None:
        return None
    who = found.identity
    wanted: list[tuple[AccessFile, str]] = [("cert", target.cert_file), ("key", target.key_file)]
    if settings is not None and settings.ca_certs:
        wanted.append(("ca_certs", settings.ca_certs))  # Gunicorn's own; the target's ca_file is the exporter's
    files = []
    for name, path in wanted:
        verdict = can_read(path, who)
        files.append(FileAccess(file=name, path=path, access=verdict.access, detail=verdict.detail))
    return WorkerAccess(
        uid=who.uid,
        gid=who.gid,
        groups=tuple(sorted(who.groups)),
        source=found.source,
        files=tuple(files),
        key_exposed=key_exposed(target.key_file),
    )
