"""The running exporter: its config, store and scheduled scans, config reload and one-off probes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gunicorn_cert_exporter import allowlist, revocation_probe
from gunicorn_cert_exporter import config as config_mod
from gunicorn_cert_exporter.config import Config, ConfigError, EndpointConfig
from gunicorn_cert_exporter.config_reloads import ConfigReloads
from gunicorn_cert_exporter.metrics.collector import Families, add_endpoint
from gunicorn_cert_exporter.model import EndpointResult, Snapshot
from gunicorn_cert_exporter.scanning.renewals import Renewals
from gunicorn_cert_exporter.scanning.revocation_pool import RevocationPool
from gunicorn_cert_exporter.scanning.scans import EndpointProber, Scans
from gunicorn_cert_exporter.scanning.scheduler import Scheduler
from gunicorn_cert_exporter.scanning.store import Store
from gunicorn_cert_exporter.sources import gunicorn
from gunicorn_cert_exporter.sources.endpoints import Prober
from gunicorn_cert_exporter.targets.history import History

_log = logging.getLogger("gunicorn_cert_exporter")


class ProbeRefusal(str, Enum):
    """Why a /probe request was not carried out (the web layer turns these into status codes)."""

    MALFORMED = "malformed"
    NOT_ALLOWED = "not_allowed"


@dataclass(frozen=True, slots=True)
class ProbeOutcome:
    """A probe's own registry, or why there was no probe."""

    registry: CollectorRegistry | None = None
    refusal: ProbeRefusal | None = None
    message: str = ""


class _ProbeCollector(Collector):
    """The series of one /probe request, in its own registry."""

    def __init__(self, result: EndpointResult, duration: float, revoked: Iterable[Metric] = ()) -> None:
        self._result, self._duration, self._revoked = result, duration, list(revoked)

    def collect(self) -> Iterable[Metric]:
        out = Families()
        add_endpoint(out, self._result)
        yield from out
        yield from self._revoked  # with revocation=1: the chain's revocation series
        success = self._result.error is None and any(a.up for a in self._result.addresses)
        yield GaugeMetricFamily(
            "gunicorn_cert_probe_success",
            "1 if a TLS handshake completed on at least one address.",
            value=1.0 if success else 0.0,
        )
        yield GaugeMetricFamily(
            "gunicorn_cert_probe_duration_seconds", "How long the probe took.", value=self._duration
        )


class Service:
    """Own the config, the store and the scheduler; reload the config without losing the old one on error.

    Lifecycle: ``start()`` schedules the scans (the first run at once), ``scan_now()`` runs each scan once in the
    caller's thread, ``stop()`` stops scheduling. ``reload()`` applies a reload at once; requests from outside go
    through ``reloads``, which applies at most one a second and coalesces the rest.
    """

    def __init__(
        self,
        *,
        config: Config,
        load: Callable[[], Config],
        store: Store,
        prober: Prober,
        endpoint_prober: EndpointProber | None = None,
        clock: Callable[[], float] = time.time,
        sender: gunicorn.SignalSender = gunicorn.send_signal,
        storage_path: str | None = None,
    ) -> None:
        self._load = load
        self._history = History(storage_path)  # one for the process: config reloads keep what it remembers
        self._reloading = threading.Lock()  # SIGHUP and POST /-/reload may arrive together
        self._store = store
        self._prober = prober
        self._endpoint_prober = endpoint_prober
        self._clock = clock
        self._sender = sender
        self._scheduler = Scheduler(self._scans(config))
        self.reloads = ConfigReloads(self.reload)  # what SIGHUP and POST /-/reload ask: at most one a second
        # ARI has its own pool, off the scans' path: a published scan only wakes it.
        self._renewals = Renewals(store=store, storage_path=storage_path, clock=clock)
        self._renewals.configure(config)
        store.subscribe(self._renewals.observe)
        # Revocation too (CRLs, OCSP): its own bounded pool beside ARI's, woken by published scans.
        self._revocations = RevocationPool(store=store, storage_path=storage_path, clock=clock)
        self._revocations.configure(config)
        store.subscribe(self._revocations.observe)
        store.update(config_reload_successful=True, config_reload_at=clock())

    @property
    def config(self) -> Config:
        """Return the config in force."""
        return self._scheduler.scans.config

    def snapshot(self) -> Snapshot:
        """Return the last completed snapshot."""
        return self._store.snapshot

    def subscribe(self, listener: Callable[[Snapshot], None]) -> None:
        """Call ``listener`` with each newly published snapshot, in the thread that published it."""
        self._store.subscribe(listener)

    def start(self) -> None:
        """Schedule every scan of the config in force; the first runs start now."""
        self._warn_volatile(self.config)
        self._scheduler.start()

    def _warn_volatile(self, config: Config) -> None:
        enabled = [t.name for t in config.gunicorn if t.reload.enabled and not t.reload.dry_run]
        policy = config.discovery.reload
        if config.discovery.gunicorn and policy.enabled and not policy.dry_run:
            enabled.append("(discovered)")
        if enabled and not self._history.persistent:
            _log.warning(
                "reload history lives in memory: cooldown and max_per_hour reset when the exporter restarts; "
                "set --storage.path",
                extra={"targets": ",".join(enabled)},
            )

    def scan_now(self) -> None:
        """Run each scan of the config in force once, in this thread, then ask ARI what is due and wait for it."""
        self._scheduler.scans.run_all()
        self._renewals.settle()
        self._revocations.settle()

    def stop(self) -> None:
        """Stop scheduling scans, applying reloads and asking ACME servers."""
        self._scheduler.shutdown()
        self.reloads.close()
        self._renewals.stop()
        self._revocations.stop()

    def _scans(self, config: Config) -> Scans:
        return Scans(
            config=config,
            store=self._store,
            prober=self._prober,
            endpoint_prober=self._endpoint_prober,
            clock=self._clock,
            sender=self._sender,
            history=self._history,
        )

    def reload(self) -> list[str]:
        """Load the config again; on any problem keep the running one and report the problems."""
        with self._reloading:
            return self._reload()

    def _reload(self) -> list[str]:
        try:
            new = self._load()
        except ConfigError as exc:
            self._store.update(config_reload_successful=False)
            _log.error("config reload failed; keeping the running config", extra={"problems": "; ".join(exc.problems)})
            return exc.problems
        old = self._scheduler.scans
        scans = self._scans(new)
        scans.watcher.inherit(old.watcher)
        scans.discovery.inherit(old.discovery)
        self._scheduler.replace(scans)
        self._renewals.configure(new)
        self._revocations.configure(new)
        self._warn_volatile(new)
        self._store.update(config_reload_successful=True, config_reload_at=self._clock())
        _log.info("config reloaded")
        return []

    def probe(self, targets: list[str], server_names: list[str], *, revocation: bool = False) -> ProbeOutcome:
        """Probe one target if ``probe.allow`` permits it (its revocation too, if asked and enabled); else refuse."""
        if len(targets) != 1 or len(server_names) > 1:
            return ProbeOutcome(refusal=ProbeRefusal.MALFORMED, message="exactly one target=host:port is required")
        target, server_name = targets[0], (server_names[0] if server_names else None)
        if allowlist.parse_target(target) is None:
            return ProbeOutcome(refusal=ProbeRefusal.MALFORMED, message="target must be host:port or [ipv6]:port")
        if server_name is not None and not allowlist.valid_server_name(server_name):
            return ProbeOutcome(refusal=ProbeRefusal.MALFORMED, message="server_name must be a DNS name")
        allow = self.config.probe
        if not allowlist.allowed(target, allow.patterns):
            return ProbeOutcome(refusal=ProbeRefusal.NOT_ALLOWED, message="target not allowed by probe.allow")
        if revocation and not self.config.revocation.enabled:
            return ProbeOutcome(refusal=ProbeRefusal.NOT_ALLOWED, message="revocation=1 needs revocation.enabled")
        started = time.monotonic()
        result = self._prober.probe(EndpointConfig(address=target, server_name=server_name, timeout=allow.timeout))
        revoked = revocation_probe.series(result, config=self.config) if revocation else ()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_ProbeCollector(result, time.monotonic() - started, revoked))
        return ProbeOutcome(registry=registry)


def load_config(path: str | None) -> Config:
    """Load the config file, or the embedded default when no path is given."""
    return config_mod.load_file(path) if path else config_mod.load(config_mod.default_text(), source="(default)")
