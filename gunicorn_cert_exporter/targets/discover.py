"""Found Gunicorn masters to targets: named, given an endpoint, remembered until ``forget_after`` (pure).

A discovered target is a ``GunicornTarget`` like a configured one, proven by pid (and the port it listens on),
so every rule that holds for a configured target holds for it. A configured target always wins: a master that
listens on a configured target's port is that target's, and is not discovered again.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gunicorn_cert_exporter.config import GunicornTarget, ReloadConfig
from gunicorn_cert_exporter.model import DiscoveryError
from gunicorn_cert_exporter.sources.discovery import FoundMaster
from gunicorn_cert_exporter.sources.listeners import Listener

PERMISSION_DENIED = "permission_denied"


@dataclass(frozen=True, slots=True)
class Discovered:
    """One discovery pass: the targets (live and recently gone), the masters that can't be targets, the count."""

    targets: tuple[GunicornTarget, ...] = ()
    errors: tuple[DiscoveryError, ...] = ()
    masters: int = 0
    worker_classes: tuple[tuple[str, str], ...] = ()  # (target name, Gunicorn's worker class) where it is known


@dataclass
class _Seen:
    target: GunicornTarget
    last_seen: float
    worker_class: str = ""


@dataclass
class Discovery:
    """Remember discovered targets across passes: a master that exits stays listed for ``forget_after``."""

    forget_after: float
    reload: ReloadConfig = field(default_factory=ReloadConfig)
    _seen: dict[tuple[int, float], _Seen] = field(default_factory=dict)

    def inherit(self, other: Discovery) -> None:
        """Keep the masters another Discovery knew (across a config reload), under this one's reload policy."""
        self._seen = {
            key: _Seen(seen.target.model_copy(update={"reload": self.reload}), seen.last_seen, seen.worker_class)
            for key, seen in other._seen.items()
        }

    def update(
        self,
        found: Sequence[FoundMaster],
        *,
        configured: Sequence[GunicornTarget],
        now: float,
        server_name: Callable[[str], str | None],
    ) -> Discovered:
        """Turn this pass's masters into targets; ``server_name`` gives a cert file's first DNS name."""
        taken = {t.name for t in configured}
        configured_ports = {t.binding()[1] for t in configured}
        errors = []
        for master in sorted(found, key=_lowest_port):
            key = (master.pid, master.start_time)
            if key in self._seen:
                self._seen[key].last_seen = now
                taken.add(self._seen[key].target.name)
                continue
            if {entry.port for entry in master.listeners} & configured_ports:
                continue  # a configured target proves this master
            outcome = self._target(master, taken=taken, server_name=server_name)
            if isinstance(outcome, DiscoveryError):
                errors.append(outcome)
                taken.add(outcome.target)  # one series per master: another can't take its name
            elif outcome is not None:
                learned = master.learned
                worker_class = (learned.settings.worker_class if learned is not None else None) or ""
                self._seen[key] = _Seen(outcome, now, worker_class)
                taken.add(outcome.name)
        self._seen = {k: s for k, s in self._seen.items() if now - s.last_seen < self.forget_after}
        kept = [s for s in self._seen.values() if s.target.binding()[1] not in configured_ports]
        return Discovered(
            targets=tuple(s.target for s in kept),
            errors=tuple(errors),
            masters=len(found),
            worker_classes=tuple((s.target.name, s.worker_class) for s in kept if s.worker_class),
        )

    def _target(
        self, master: FoundMaster, *, taken: set[str], server_name: Callable[[str], str | None]
    ) -> GunicornTarget | DiscoveryError | None:
        listener = min(master.listeners, key=lambda entry: (entry.port, entry.address.version), default=None)
        name = _name(master, listener, taken)
        if master.denied:
            return DiscoveryError(target=name, reason=PERMISSION_DENIED, detail=master.denied)
        learned = master.learned
        if learned is None or listener is None:
            return None  # not Gunicorn's entry point, or it listens on no TCP port (a unix socket only)
        if learned.problem is not None:
            return DiscoveryError(name, learned.problem.value, learned.detail, learned.config_file or "")
        settings = learned.settings
        if settings.certfile is None:
            return None  # plain HTTP
        return GunicornTarget(
            name=name,
            cert_file=settings.certfile,
            key_file=settings.keyfile or settings.certfile,  # Gunicorn loads the key from the certfile then
            endpoint=_endpoint(listener),
            server_name=server_name(settings.certfile),
            pid=master.pid,
            reload=self.reload,
        )


def _lowest_port(master: FoundMaster) -> int:
    return min((entry.port for entry in master.listeners), default=65536)


def _name(master: FoundMaster, listener: Listener | None, taken: set[str]) -> str:
    if listener is None:  # its sockets can't be seen (another user's): its pid tells it from the others
        return f"gunicorn-pid-{master.pid}"
    learned = master.learned
    proc_name = learned.settings.proc_name if learned is not None else None
    name = _safe(proc_name) if proc_name else f"gunicorn-{listener.port}"
    return f"{name}-{listener.port}" if name in taken else name


def _safe(name: str) -> str:
    """Fit Gunicorn's proc_name into a target name (1-64 letters, digits, '_', '.', ':' or '-')."""
    kept = "".join(c if c.isalnum() or c in "_.:-" else "-" for c in name if c.isascii())[:56]
    return kept or "gunicorn"


def _endpoint(listener: Listener) -> str:
    address = listener.address
    if address.is_unspecified:  # 0.0.0.0 is probed as 127.0.0.1, [::] as [::1]
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"{host}:{listener.port}"
