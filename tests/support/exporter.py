"""A running exporter: in this process (``start_exporter``) or as a real ``serve`` process."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gunicorn_cert_exporter.exporter import Exporter, Options
from gunicorn_cert_exporter.service import Service
from gunicorn_cert_exporter.sources.endpoints import Prober
from gunicorn_cert_exporter.sources.gunicorn import SignalSender, send_signal
from gunicorn_cert_exporter.web.connections import Limits
from gunicorn_cert_exporter.web.server import WebServer
from gunicorn_cert_exporter.web.webconfig import ReloadingContext
from tests.support.processes import free_port, stop_process


def parse_samples(exposition: str) -> dict[str, float]:
    """Return every sample of an exposition as {'name{labels}': value}, labels sorted."""
    samples = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


@dataclass
class RunningExporter:
    """An exporter serving HTTP on loopback, with its scans run by hand (``scan_now``) or by its scheduler."""

    url: str
    exporter: Exporter
    config_path: Path

    @property
    def service(self) -> Service:
        """Return the exporter's service (its config, snapshot and reload)."""
        return self.exporter.service

    @property
    def server(self) -> WebServer:
        """Return the exporter's HTTP server."""
        return self.exporter.server

    @property
    def port(self) -> int:
        """Return the port the exporter listens on."""
        return self.exporter.addresses[0][1]

    def scan_now(self) -> None:
        """Run every scan once and publish it."""
        self.service.scan_now()

    def get(self, path: str, **headers: str) -> tuple[int, bytes]:
        """Return the status and body of a GET of ``path``."""
        return self.request(path, headers=headers)

    def post(self, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """Return the status and body of a POST of ``path``."""
        return self.request(path, method="POST", body=body)

    def request(
        self, path: str, *, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """Return the status and body of a request to ``path``, an error status included."""
        request = urllib.request.Request(self.url + path, data=body, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def metrics(self) -> dict[str, float]:
        """Return every sample of /metrics as {'name{labels}': value}."""
        status, body = self.get("/metrics")
        assert status == 200
        return parse_samples(body.decode())

    def close(self) -> None:
        """Stop serving and scheduling."""
        self.exporter.stop()


def start_exporter(
    config_path: Path,
    *,
    users: dict[str, str] | None = None,
    tls: ReloadingContext | None = None,
    schedule: bool = False,
    prober: Prober | None = None,
    sender: SignalSender = send_signal,
    limits: Limits | None = None,
    live: CollectorRegistry | None = None,
) -> RunningExporter:
    """Serve the config at ``config_path`` on a free loopback port, wired as ``serve`` wires it (probes in-process)."""
    options = Options(listen=("127.0.0.1:0",), users=users or {}, tls=tls, limits=limits or Limits())
    exporter = Exporter(str(config_path), options, prober=prober, sender=sender, live=live or CollectorRegistry())
    exporter.start(schedule=schedule)
    scheme = "https" if tls else "http"
    return RunningExporter(f"{scheme}://127.0.0.1:{exporter.addresses[0][1]}", exporter, config_path)


StartExporter = Callable[..., RunningExporter]
"""The ``run_exporter`` fixture: config text and start_exporter's keywords to a running exporter."""


class ExporterProcess:
    """A real ``gunicorn-cert-exporter serve`` process on a free loopback port, as an operator runs it."""

    def __init__(
        self,
        config_path: Path,
        *,
        cwd: Path,
        storage: Path | None = None,
        log: Path | None = None,
        prefix: tuple[str, ...] = (),
    ) -> None:
        """Start it; ``prefix`` runs it under another command (e.g. ``unshare --pid --fork --mount-proc``)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable, "-m", "gunicorn_cert_exporter", "serve", "--config", str(config_path),
            "--web.listen-address", f"127.0.0.1:{self.port}", "--log.level", "debug",
        ]  # fmt: skip
        if storage is not None:
            command += ["--storage.path", str(storage)]
        self.log = log or cwd / f"exporter-{self.port}.log"
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen([*prefix, *command], stdout=out, stderr=subprocess.STDOUT, cwd=cwd)

    def metrics(self) -> dict[str, float]:
        """Return every sample of /metrics as {'name{labels}': value} (raises OSError while it is not up)."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            body = response.read().decode()
        return parse_samples(body)

    def kill(self) -> None:
        """Kill it with SIGKILL (a crash: nothing is flushed, nothing cleaned up)."""
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """Stop it if it still runs."""
        stop_process(self.process)
