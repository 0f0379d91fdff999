"""The series of one Gunicorn target: drift, key, master, reloads, and the rotation runbook's facts."""

from __future__ import annotations

from gunicorn_cert_exporter.metrics.samples import Sink, label, number
from gunicorn_cert_exporter.model import TargetState
from gunicorn_cert_exporter.runbook import Access


def add_target(out: Sink, target: TargetState) -> None:
    """Add the drift, key, master and reload series of one Gunicorn target."""
    name = [target.name]
    for drift in target.drift:
        where = [target.name, label(drift.address)]
        out.add("gunicorn_cert_fingerprint_mismatch", where, 1.0 if drift.mismatch else 0.0)
        if drift.mismatch and drift.since is not None:
            out.add("gunicorn_cert_fingerprint_mismatch_since_timestamp_seconds", where, drift.since)
    for result in target.endpoint.addresses:
        if result.leaf is not None:
            out.add(
                "gunicorn_cert_target_served_not_after_timestamp_seconds",
                [target.name, label(result.address)],
                result.leaf.not_after,
            )
    out.add("gunicorn_cert_key_match", name, 1.0 if target.key_match else 0.0)
    if target.file_leaf is not None:
        out.add("gunicorn_cert_target_file_not_after_timestamp_seconds", name, target.file_leaf.not_after)
    master = target.master
    out.add("gunicorn_cert_master_up", name, 1.0 if master.up else 0.0)
    if master.error is not None:
        out.add("gunicorn_cert_master_error", [target.name, master.error.value], 1.0)
    out.add("gunicorn_cert_master_info", [target.name, master.channel], 1.0)  # the channel is known unproven too
    out.add("gunicorn_cert_master_pid", name, number(master.pid or 0))  # 0 while no master is proven: the series stays
    if master.start_time is not None:
        out.add("gunicorn_cert_master_start_timestamp_seconds", name, master.start_time)
    out.add("gunicorn_cert_master_workers", name, len(master.workers))
    if target.last_reload is not None:
        out.add("gunicorn_cert_last_reload_timestamp_seconds", name, target.last_reload)
    out.add("gunicorn_cert_reload_signals", name, target.reload_signals)
    out.add("gunicorn_cert_reload_failures", name, target.reload_failures)
    out.add("gunicorn_cert_reload_history_error", name, 1.0 if target.history_problem else 0.0)
    add_runbook(out, target)
    files = [label(target.cert.path), label(target.key.path)]
    out.add("gunicorn_cert_target_info", [target.name, target.source, *files, label(target.worker_class)], 1.0)


def add_runbook(out: Sink, target: TargetState) -> None:
    """Add what the workers can read, the key's exposure, the next window and the failures by reason."""
    for reason, count in target.failure_reasons:
        out.add("gunicorn_cert_reload_failures_by_reason", [target.name, reason], count)
    if target.next_window is not None:
        out.add("gunicorn_cert_reload_next_window_timestamp_seconds", [target.name], target.next_window)
    access = target.access
    if access is None:
        return  # no proven master, or its workers can't be seen: unknown, no series
    for entry in access.files:
        if entry.access is not Access.UNKNOWN:
            out.add("gunicorn_cert_worker_can_read", [target.name, entry.file], float(entry.access is Access.READABLE))
    if access.key_exposed is not None:
        out.add("gunicorn_cert_key_file_exposed", [target.name], float(access.key_exposed))
