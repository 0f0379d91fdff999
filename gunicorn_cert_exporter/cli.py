"""Arguments and wiring; the only place that exits the process."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from gunicorn_cert_exporter import __version__, check, logs, status
from gunicorn_cert_exporter.bands import Edge, Thresholds
from gunicorn_cert_exporter.config import Config, ConfigError, parse_edge, without_reloads
from gunicorn_cert_exporter.metrics.collector import SnapshotCollector
from gunicorn_cert_exporter.scanning.store import Store
from gunicorn_cert_exporter.service import Service, load_config
from gunicorn_cert_exporter.sources.endpoints import Prober
from gunicorn_cert_exporter.sources.probe_process import ProbeProcess
from gunicorn_cert_exporter.web import webconfig

DEFAULT_LISTEN = ":9793"
SHUTDOWN_GRACE = 3.0
SHUTDOWN_DEADLINE = 4.5  # after SIGTERM, the process is gone by then whatever blocks
"""Seconds SIGTERM waits for the HTTP server and scheduler to stop before the process exits regardless."""
_log = logging.getLogger("gunicorn_cert_exporter")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gunicorn-cert-exporter", description="Prometheus exporter for Gunicorn's TLS certificates."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="scan on a schedule and serve metrics (default)")
    serve.add_argument("--config", help="YAML config file (default: the embedded example config)")
    serve.add_argument(
        "--web.listen-address",
        dest="listen",
        action="append",
        help=f"host:port to listen on; repeat for several (default {DEFAULT_LISTEN})",
    )
    serve.add_argument("--web.config.file", dest="web_config", help="exporter-toolkit web config (TLS, basic auth)")
    serve.add_argument("--log.level", dest="log_level", default="info", choices=["debug", "info", "warn", "error"])
    serve.add_argument("--log.format", dest="log_format", default="logfmt", choices=["logfmt", "json"])
    serve.add_argument(
        "--storage.path", dest="storage_path", help="directory where reload history survives restarts (crash loops)"
    )
    chk = commands.add_parser("check", help="scan once, print a verdict, exit with a Nagios code")
    chk.add_argument("--config", help="YAML config file (default: the embedded example config)")
    chk.add_argument("--output", default="table", choices=["table", "json", "prometheus"])
    limits = Thresholds()
    for name, edge in (("warning", limits.warning), ("critical", limits.critical)):
        chk.add_argument(
            f"--{name}",
            type=_edge,
            metavar="EDGE",
            help=f"{name} below this much validity left: a duration (28d), a share of each certificate's lifetime "
            f"(25%%) or both, the smaller counting (default: the config's bands.{name}, else "
            f"'{str(edge).replace('%', '%%')}')",
        )
    chk.add_argument("--problems", action="store_true", help="list only rows that are not OK (the summary counts all)")
    commands.add_parser("demo", help="the whole story on this machine: rotate, drift, safe HUP, drift gone")
    return parser


def _edge(text: str) -> Edge:
    try:
        return parse_edge(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (args_list[0].startswith("-") and args_list[0] not in ("-h", "--help", "--version")):
        args_list.insert(0, "serve")
    args = _parser().parse_args(args_list)
    if args.command == "demo":
        from gunicorn_cert_exporter import demo

        return demo.run()
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"{args.config or '(default config)'}: {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    if args.command == "check":
        return _check(args, config)
    return _serve(args, config)


def _check(args: argparse.Namespace, config: Config) -> int:
    logs.setup(level="error", fmt="logfmt")
    # A one-off scan observes and never acts: `check` runs from cron and monitoring agents, not as the reloader.
    observe_only = without_reloads(config)
    service = Service(config=observe_only, load=lambda: observe_only, store=Store(), prober=Prober())
    service.scan_now()
    snap = service.snapshot()
    if args.output == "prometheus":
        registry = CollectorRegistry(auto_describe=True)
        registry.register(SnapshotCollector(lambda: snap))
        sys.stdout.write(generate_latest(registry).decode())
        return 0
    bands = config.bands  # the page's bands; a flag replaces its edge whole (``--warning 28d``: a fixed band)
    limits = Thresholds(warning=args.warning or bands.warning, critical=args.critical or bands.critical)
    view = status.build(snap, now=time.time(), thresholds=limits)
    rows = check.rows(view)
    render = check.as_json if args.output == "json" else check.as_table
    text = render(rows, problems_only=args.problems)
    sys.stdout.buffer.write(text.encode("utf-8", "backslashreplace"))  # file names may not be UTF-8
    sys.stdout.flush()
    return int(check.verdict(rows))


def _serve(args: argparse.Namespace, config: Config) -> int:
    from gunicorn_cert_exporter.web import server as web

    logs.setup(level=args.log_level, fmt=args.log_format)
    try:
        web_config = webconfig.load(args.web_config) if args.web_config else webconfig.WebConfig()
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    store = Store()
    if args.storage_path and not os.path.isdir(args.storage_path):
        print(f"--storage.path {args.storage_path}: not a directory", file=sys.stderr)
        return 2
    probes = ProbeProcess(log=(args.log_level, args.log_format))  # the endpoints scan, away from the server's GIL
    service = Service(
        config=config,
        load=lambda: load_config(args.config),
        store=store,
        prober=Prober(),
        endpoint_prober=probes,
        storage_path=args.storage_path,
    )
    live = CollectorRegistry()  # series read at each scrape, beside the snapshot's pre-rendered ones
    for extra in (ProcessCollector, PlatformCollector, GCCollector):
        extra(registry=live)
    app = web.app_for(service, live=live)
    tls = webconfig.ReloadingContext(web_config.tls_server_config) if web_config.tls_server_config else None
    _raise_open_files_limit()
    # Scans run Python on many threads; the event loop thread waits for the GIL after each system call. A shorter
    # switch interval (default 5 ms) bounds that wait, which is what a scrape's latency is made of.
    sys.setswitchinterval(0.0005)
    listen = args.listen or [DEFAULT_LISTEN]
    try:
        server = web.WebServer(app, addresses=listen, auth=webconfig.BasicAuth(web_config.basic_auth_users), tls=tls)
    except OSError as exc:
        print(f"can't listen on {' '.join(listen)}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            threading.Thread(target=service.reload, name="reload", daemon=True).start()
        else:
            stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    service.start()
    server.start()
    for host, port in server.addresses:
        _log.info("listening", extra={"address": f"{host}:{port}", "tls": tls is not None, "version": __version__})
    # Wake up now and then: the kernel may deliver SIGHUP/SIGTERM to another thread, and Python runs a handler only
    # when the main thread runs, which an untimed wait never does again (the signal would be lost).
    while not stop.wait(timeout=0.5):
        pass
    # Whatever blocks from here on (a full stderr pipe under the logging lock, a stuck scan), the process ends
    # within the 5 s an orchestrator allows: a last-resort timer exits without logging.
    last_resort = threading.Timer(SHUTDOWN_DEADLINE, os._exit, (0,))
    last_resort.daemon = True
    last_resort.start()
    _log.info("shutting down")

    def close() -> None:
        server.stop()
        service.stop()
        probes.close()

    # Stop what stops within a bound, then leave without joining threads: a scan stuck in a read (a FIFO, a hung
    # NFS mount) can't be interrupted, and concurrent.futures would join its workers at interpreter exit.
    closing = threading.Thread(target=close, name="shutdown", daemon=True)
    closing.start()
    closing.join(SHUTDOWN_GRACE)
    if closing.is_alive():
        _log.warning("shutdown grace period over; exiting anyway", extra={"grace_seconds": SHUTDOWN_GRACE})
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


def _raise_open_files_limit() -> None:
    """Raise the soft limit on open files to the hard one: idle clients must not run the server out of sockets."""
    try:
        import resource
    except ImportError:  # not on every platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
