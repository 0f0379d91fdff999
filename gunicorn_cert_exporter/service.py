"""The running exporter: current config, scans, config reload and /probe, as the HTTP layer sees them."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gunicorn_cert_exporter import config as config_mod
from gunicorn_cert_exporter import probe as probe_mod
from gunicorn_cert_exporter.collector import Families, SnapshotCollector, add_endpoint
from gunicorn_cert_exporter.config import Config, ConfigError, EndpointConfig
from gunicorn_cert_exporter.endpoints import Prober
from gunicorn_cert_exporter.exposition import Exposition
from gunicorn_cert_exporter.model import EndpointResult
from gunicorn_cert_exporter.scheduler import Scans, Scheduler
from gunicorn_cert_exporter.store import Store
from gunicorn_cert_exporter.web import App, Response

_log = logging.getLogger("gunicorn_cert_exporter")


class _ProbeCollector(Collector):
    """The series of one /probe request, in its own registry."""

    def __init__(self, result: EndpointResult, duration: float) -> None:
        self._result, self._duration = result, duration

    def collect(self) -> Iterable[Metric]:
        out = Families()
        add_endpoint(out, self._result)
        yield from out
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
    """Own the config, the store and the scheduler; reload the config without losing the old one on error."""

    def __init__(
        self,
        *,
        config: Config,
        load: Callable[[], Config],
        store: Store,
        prober: Prober,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._load = load
        self._reloading = threading.Lock()  # SIGHUP and POST /-/reload may arrive together
        self._store = store
        self._prober = prober
        self._clock = clock
        self.scheduler = Scheduler(self._scans(config))
        store.update(config_reload_successful=True, config_reload_at=clock())

    def app(self) -> App:
        """Return what the HTTP layer serves: /metrics from the store's snapshot, /probe, /-/reload."""
        registry = CollectorRegistry(auto_describe=True)
        registry.register(SnapshotCollector(lambda: self._store.snapshot))
        exposition = Exposition(snapshot=lambda: self._store.snapshot, registry=registry, live=CollectorRegistry())
        return App(exposition=exposition, snapshot=lambda: self._store.snapshot, probe=self.probe, reload=self.reload)

    @property
    def config(self) -> Config:
        """Return the config in force."""
        return self.scheduler.scans.config

    def _scans(self, config: Config) -> Scans:
        return Scans(config=config, store=self._store, prober=self._prober, clock=self._clock)

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
        old = self.scheduler.scans
        scans = self._scans(new)
        scans.watcher.inherit(old.watcher)
        self.scheduler.replace(scans)
        self._store.update(config_reload_successful=True, config_reload_at=self._clock())
        _log.info("config reloaded")
        return []

    def probe(self, query: dict[str, list[str]]) -> tuple[Response, CollectorRegistry | None]:
        """Probe one target if ``probe.allow`` permits it; 400 for a malformed request, 403 if not allowed."""
        targets, names = query.get("target", []), query.get("server_name", [])
        if len(targets) != 1 or len(names) > 1:
            return Response(HTTPStatus.BAD_REQUEST, b"exactly one target=host:port is required\n"), None
        target, server_name = targets[0], (names[0] if names else None)
        if probe_mod.parse_target(target) is None:
            return Response(HTTPStatus.BAD_REQUEST, b"target must be host:port or [ipv6]:port\n"), None
        if server_name is not None and not probe_mod.valid_server_name(server_name):
            return Response(HTTPStatus.BAD_REQUEST, b"server_name must be a DNS name\n"), None
        allow = self.config.probe
        if not probe_mod.allowed(target, allow.allow):
            return Response(HTTPStatus.FORBIDDEN, b"target not allowed by probe.allow\n"), None
        started = time.monotonic()
        result = self._prober.probe(EndpointConfig(address=target, server_name=server_name, timeout=allow.timeout))
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_ProbeCollector(result, time.monotonic() - started))
        return Response(HTTPStatus.OK, b""), registry


def load_config(path: str | None) -> Config:
    """Load the config file, or the embedded default when no path is given."""
    return config_mod.load_file(path) if path else config_mod.load(config_mod.default_text(), source="(default)")
