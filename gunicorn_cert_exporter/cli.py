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
from typing import NoReturn

from prometheus_client import CollectorRegistry, generate_latest

from gunicorn_cert_exporter import __version__, check, logs, status
from gunicorn_cert_exporter.bands import Edge, Thresholds
from gunicorn_cert_exporter.config import Config, ConfigError, without_reloads
from gunicorn_cert_exporter.config_values import parse_edge
from gunicorn_cert_exporter.exporter import DEFAULT_LISTEN, Exporter, Options
from gunicorn_cert_exporter.metrics.collector import SnapshotCollector
from gunicorn_cert_exporter.scanning.store import Store
from gunicorn_cert_exporter.service import Service, load_config
from gunicorn_cert_exporter.sources.endpoints import Prober
from gunicorn_cert_exporter.web import webconfig

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
    if args.command == "serve":
        return _serve(args)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _config_problems(args.config, exc)
    return _check(args, config)


def _config_problems(path: str | None, exc: ConfigError) -> int:
    print(f"{path or '(default config)'}: {len(exc.problems)} problem(s):", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)
    return 2


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


def _serve(args: argparse.Namespace) -> int:
    logs.setup(level=args.log_level, fmt=args.log_format)
    exporter = _exporter(args)
    if isinstance(exporter, int):
        return exporter
    _raise_open_files_limit()
    # Scans run Python on many threads; the event loop thread waits for the GIL after each system call. A shorter
    # switch interval (default 5 ms) bounds that wait, which is what a scrape's latency is made of.
    sys.setswitchinterval(0.0005)
    stop = _on_signals(exporter)
    exporter.start()
    # Wake up now and then: the kernel may deliver SIGHUP/SIGTERM to another thread, and Python runs a handler only
    # when the main thread runs, which an untimed wait never does again (the signal would be lost).
    while not stop.wait(timeout=0.5):
        pass
    return _exit(exporter)


def _exporter(args: argparse.Namespace) -> Exporter | int:
    """Build the exporter ``serve`` runs, or return the exit code that says why it can't be built."""
    if args.storage_path and not os.path.isdir(args.storage_path):
        print(f"--storage.path {args.storage_path}: not a directory", file=sys.stderr)
        return 2
    try:
        options = _options(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    try:
        return Exporter(args.config, options)
    except ConfigError as exc:
        return _config_problems(args.config, exc)
    except OSError as exc:
        print(f"can't listen on {' '.join(options.listen)}: {exc.strerror or exc}", file=sys.stderr)
        return 1


def _on_signals(exporter: Exporter) -> threading.Event:
    """Handle SIGTERM and SIGINT (the returned event is set) and SIGHUP (a reload, at most one a second)."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            exporter.reload_soon()  # never blocks and never starts a thread per signal
        else:
            stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    return stop


def _options(args: argparse.Namespace) -> Options:
    """Read the web config file (ConfigError) into the options ``serve`` runs with."""
    web_config = webconfig.load(args.web_config) if args.web_config else webconfig.WebConfig()
    tls = web_config.tls_server_config
    return Options(
        listen=tuple(args.listen or [DEFAULT_LISTEN]),
        users=web_config.basic_auth_users,
        tls=webconfig.ReloadingContext(tls) if tls else None,
        storage_path=args.storage_path,
        probe_log=(args.log_level, args.log_format),  # the endpoints scan, away from the server's GIL
    )


def _exit(exporter: Exporter) -> NoReturn:
    """Stop what stops within a bound, then leave without joining threads, within SHUTDOWN_DEADLINE."""
    # Whatever blocks from here on (a full stderr pipe under the logging lock, a stuck scan), the process ends
    # within the 5 s an orchestrator allows: a last-resort timer exits without logging.
    last_resort = threading.Timer(SHUTDOWN_DEADLINE, os._exit, (0,))
    last_resort.daemon = True
    last_resort.start()
    _log.info("shutting down")
    # A scan stuck in a read (a FIFO, a hung NFS mount) can't be interrupted, and concurrent.futures would join its
    # workers at interpreter exit: stop in a daemon thread, wait SHUTDOWN_GRACE for it, and exit regardless.
    closing = threading.Thread(target=exporter.stop, name="shutdown", daemon=True)
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
