"""One running exporter: a config's Service, the HTTP app and server, the probe process and the live registry.

``cli serve``, the demo and the tests' in-process exporter build it the same way: ``Exporter(config_path,
Options(...))`` loads the config and binds the listeners (a ConfigError or OSError says why it can't), ``start()``
serves and schedules the scans, ``stop()`` ends them. Signals and the process's exit stay with the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from gunicorn_cert_exporter import __version__
from gunicorn_cert_exporter.scanning.store import Store
from gunicorn_cert_exporter.service import Service, load_config
from gunicorn_cert_exporter.sources import gunicorn
from gunicorn_cert_exporter.sources.endpoints import Prober
from gunicorn_cert_exporter.sources.probe_process import ProbeProcess
from gunicorn_cert_exporter.web.connections import Limits
from gunicorn_cert_exporter.web.routes import app_for
from gunicorn_cert_exporter.web.server import WebServer
from gunicorn_cert_exporter.web.webconfig import BasicAuth, ReloadingContext

DEFAULT_LISTEN = ":9793"
_log = logging.getLogger("gunicorn_cert_exporter")


@dataclass(frozen=True)
class Options:
    """How to serve a config: what ``serve``'s flags and the web config file say."""

    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    users: Mapping[str, str] = field(default_factory=dict)  # basic-auth users and their bcrypt hashes
    tls: ReloadingContext | None = None
    limits: Limits = field(default_factory=Limits)
    storage_path: str | None = None  # where reload history survives restarts
    probe_log: tuple[str, str] | None = None
    """Probe the endpoints in a child process that logs at this (level, format); None probes in this process."""


def process_registry() -> CollectorRegistry:
    """Return the series read at each scrape beside the snapshot's: the process, the platform, the GC."""
    live = CollectorRegistry()
    for extra in (ProcessCollector, PlatformCollector, GCCollector):
        extra(registry=live)
    return live


class Exporter:
    """Scan a config on a schedule and serve it over HTTP; ``start()`` and ``stop()`` are its whole lifecycle."""

    def __init__(
        self,
        config_path: str | None,
        options: Options | None = None,
        *,
        prober: Prober | None = None,
        sender: gunicorn.SignalSender = gunicorn.send_signal,
        live: CollectorRegistry | None = None,
    ) -> None:
        """Load the config (ConfigError) and bind the listeners (OSError); nothing runs until ``start()``.

        ``live`` replaces the process series (tests pass their own registry); ``prober`` and ``sender`` are the
        scans' probes and signal sender.
        """
        options = options or Options()
        self._tls = options.tls
        self._probes = ProbeProcess(log=options.probe_log) if options.probe_log else None
        self.service = Service(
            config=load_config(config_path),
            load=lambda: load_config(config_path),
            store=Store(),
            prober=prober or Prober(),
            endpoint_prober=self._probes,
            sender=sender,
            storage_path=options.storage_path,
        )
        self._server = WebServer(
            app_for(self.service, live=process_registry() if live is None else live),
            addresses=list(options.listen),
            auth=BasicAuth(dict(options.users)),
            tls=options.tls,
            limits=options.limits,
        )

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Return the bound (host, port) of each listener."""
        return self._server.addresses

    @property
    def server(self) -> WebServer:
        """Return the HTTP server (its connection guard's counts are what the tests watch)."""
        return self._server

    def start(self, *, schedule: bool = True) -> None:
        """Serve HTTP and schedule the scans (the first runs now); without ``schedule``, scans run only by hand."""
        self._server.start()
        for host, port in self._server.addresses:
            tls = self._tls is not None
            _log.info("listening", extra={"address": f"{host}:{port}", "tls": tls, "version": __version__})
        if schedule:
            self.service.start()

    def reload_soon(self) -> None:
        """Ask for a config reload without waiting (SIGHUP): applied within a second, coalesced with others."""
        self.service.reloads.soon()

    def stop(self) -> None:
        """Stop serving, scheduling and probing (a scan stuck in a read is left to end with the process)."""
        self._server.stop()
        self.service.stop()
        if self._probes is not None:
            self._probes.close()
