"""Load tests of the exporter's HTTP server, from outside, on loopback. Run by hand:

  python bench/load.py scrapers [--duration 60 --scrapers 20 --files 10000 --endpoints 200 --interval 2]
      20 concurrent scrapers (each its own process) while every scan kind runs every 2 s; p50/p99/max, errors.
  python bench/load.py attack [--tls] [--idle 1000 --drip 200 --duration 60]
      one client holds 1,000 idle connections and drips 200 more (re-opening any that close); with --tls the
      exporter requires verified client certificates and the holders send partial ClientHellos. A scraper at one
      request per second reports its success rate and p99.
  python bench/load.py flood [--threads 70 --duration 60]
      70 threads of wrong-password requests and 70 of /probe to an allowed target that accepts and never answers;
      a scraper with the right password, once a second, reports its success rate and p99.
  python bench/load.py auth [--rounds 40]
      median latency of an unknown user vs a known user with a wrong password (cost-12 bcrypt hash).
Each exits 1 when its acceptance bound is missed.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import re
import resource
import selectors
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contextlib

from common import Exporter, Fleet, machine, make_tree, percentile, scrape_in_processes

from tests.support import PKI, write_chain


def _raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- 20 scrapers during scans -------------------------------------------------------------------------------------


def scrapers(*, duration: float, count: int, files: int, endpoints: int, interval: float, work: Path) -> dict[str, Any]:
    """20 concurrent scrapers (gzip, as Prometheus) while every scan kind runs every ``interval`` seconds."""
    make_tree(work / "certs", files)
    fleet = Fleet(endpoints)
    text = "".join(f"  - {{address: '127.0.0.1:{p}', server_name: localhost, timeout: 5s}}\n" for p in fleet.ports)
    exporter = Exporter(
        f"scan: {{interval: {interval}s, jitter: 0%, concurrency: 32}}\n"
        f"files: [{{paths: ['{work}/certs/**/*.pem']}}]\nendpoints:\n{text}",
        work,
    )
    try:
        exporter.wait_for('gunicorn_cert_exporter_last_scan_timestamp_seconds{kind="endpoints"}')
        exporter.wait_for('gunicorn_cert_exporter_last_scan_timestamp_seconds{kind="files"}')
        before = _scan_times(exporter.metrics())
        latencies, errors = scrape_in_processes(exporter.port, scrapers=count, duration=duration)
        after = _scan_times(exporter.metrics())
        plain = exporter.metrics().encode()
        return {
            "scrapes": len(latencies),
            "errors": errors,
            "p50": percentile(latencies, 0.5),
            "p99": percentile(latencies, 0.99),
            "max": max(latencies),
            "plain_mb": len(plain) / 1e6,
            "scans": {k: float(after[k]) - float(before.get(k, after[k])) for k in after},
            "rss": exporter.rss_mib(),
            "load": os.getloadavg()[0],
        }
    finally:
        exporter.close()
        fleet.close()


def _scan_times(text: str) -> dict[str, str]:
    return dict(re.findall(r'gunicorn_cert_exporter_last_scan_timestamp_seconds\{kind="(\w+)"\} (\S+)', text))


# --- one client holding idle and dripping connections --------------------------------------------------------------


def _client_hello() -> bytes:
    """The bytes of a real TLS ClientHello, to send part of."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def attacker(port: int, *, idle: int, drip: int, tls: bool) -> None:
    """Hold ``idle`` connections that send (almost) nothing and ``drip`` that send one byte a second; re-open any that
    close. With ``tls`` each idle one sends the first half of a ClientHello and the drippers drip one."""
    _raise_nofile()
    payload = _client_hello() if tls else b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100_000
    selector = selectors.DefaultSelector()
    state: dict[socket.socket, tuple[str, int]] = {}
    reopened = 0

    def open_one(kind: str) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            return
        sock.setblocking(False)
        sent = 0
        if kind == "idle" and tls:
            sock.send(payload[: len(payload) // 2])
            sent = len(payload) // 2
        state[sock] = (kind, sent)
        selector.register(sock, selectors.EVENT_READ)

    for _ in range(idle):
        open_one("idle")
    for _ in range(drip):
        open_one("drip")
    print(json.dumps({"open": len(state)}), flush=True)
    next_drip = time.monotonic()
    while True:
        for key, _ in selector.select(timeout=0.1):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:  # the server closed it: open another, as an attacker would
                kind, _ = state.pop(sock)
                selector.unregister(sock)
                sock.close()
                open_one(kind)
                reopened += 1
        if time.monotonic() >= next_drip:
            next_drip += 1.0
            for sock, (kind, sent) in list(state.items()):
                if kind == "drip" and sent < len(payload) - 1:
                    try:
                        sock.send(payload[sent : sent + 1])
                        state[sock] = (kind, sent + 1)
                    except OSError:
                        pass
            print(json.dumps({"open": len(state), "reopened": reopened}), flush=True)


def attack(*, tls: bool, idle: int, drip: int, duration: float, work: Path) -> dict[str, Any]:
    """Scrape once a second while one client holds ``idle`` + ``drip`` connections."""
    extra: tuple[str, ...] = ()
    client: ssl.SSLContext | None = None
    if tls:
        pki = PKI()
        ca = pki.ca("bench web CA")
        cert, key = write_chain(work, "web", pki.leaf(ca))
        client_cert, client_key = write_chain(work, "prometheus", pki.leaf(ca, "prometheus", sans=()))
        (work / "clients.pem").write_bytes(ca.cert_pem)
        (work / "web.yml").write_text(
            f"tls_server_config: {{cert_file: {cert}, key_file: {key}, client_auth_type: RequireAndVerifyClientCert,"
            f" client_ca_file: {work / 'clients.pem'}, min_version: TLS13}}\n"
        )
        extra = ("--web.config.file", str(work / "web.yml"))
        client = ssl.create_default_context(cadata=ca.cert_pem.decode())
        client.load_cert_chain(client_cert, client_key)
    exporter = Exporter("scan: {interval: 2s, jitter: 0%}\n", work, extra=extra, scheme="https" if tls else "http")
    holder = None
    try:
        _wait_up(exporter.port, client)
        holder = subprocess.Popen(
            [sys.executable, __file__, "attacker", "--port", str(exporter.port), "--idle", str(idle),
             "--drip", str(drip), *(["--tls"] if tls else [])],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert holder.stdout is not None
        opened = json.loads(holder.stdout.readline())["open"]
        time.sleep(2)
        latencies: list[float] = []
        failures: list[str] = []
        for _ in range(int(duration)):
            started = time.perf_counter()
            try:
                status = _scrape(exporter.port, client)
                if status != 200:
                    failures.append(str(status))
            except (OSError, http.client.HTTPException) as exc:
                failures.append(type(exc).__name__)
            took = time.perf_counter() - started
            latencies.append(took)
            time.sleep(max(0.0, 1.0 - took))
        holder.kill()
        last: dict[str, Any] = {}
        for line in holder.stdout.read().splitlines():
            last = json.loads(line)
        refused = _refusals(exporter.port, client)
        ok = len(latencies) - len(failures)
        return {
            "tls": tls,
            "held": opened,
            "reopened": last.get("reopened", 0),
            "scrapes": len(latencies),
            "ok": ok,
            "success": ok / len(latencies),
            "p50": percentile(latencies, 0.5),
            "p99": percentile(latencies, 0.99),
            "refused": refused,
            "failures": failures[:5],
        }
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
        exporter.close()


def _connection(port: int, client: ssl.SSLContext | None) -> http.client.HTTPConnection:
    if client is None:
        return http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    return http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=client)


def _scrape(port: int, client: ssl.SSLContext | None, path: str = "/metrics") -> int:
    conn = _connection(port, client)  # a new connection each time: the hardest case (accept + handshake)
    try:
        conn.request("GET", path, headers={"Accept-Encoding": "gzip"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _wait_up(port: int, client: ssl.SSLContext | None) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if _scrape(port, client, "/healthz") == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("exporter did not start")
        time.sleep(0.2)


def _refusals(port: int, client: ssl.SSLContext | None) -> dict[str, float]:
    conn = _connection(port, client)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    found = re.findall(r'gunicorn_cert_exporter_http_refused_total\{reason="(\w+)"\} (\S+)', text)
    return {reason: float(value) for reason, value in found if float(value)}


# --- floods of wrong passwords and stalled probes ------------------------------------------------------------------


def flood(*, threads: int, duration: float, work: Path) -> dict[str, Any]:
    """Scrape once a second with valid credentials while ``threads`` clients send wrong passwords and as many probe
    a target that never answers."""
    import bcrypt

    from tests.support import TLSServer

    stall = TLSServer("127.0.0.1", mode="stall")
    hashed = bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=12)).decode()
    (work / "web.yml").write_text(f"basic_auth_users: {{prom: '{hashed}'}}\n")
    exporter = Exporter(
        f"probe: {{allow: ['127.0.0.1:{stall.port}'], timeout: 10s}}\n",
        work,
        extra=("--web.config.file", str(work / "web.yml")),
    )
    stop = threading.Event()
    counts = {"401": 0, "429": 0, "503": 0, "other": 0}

    def hammer(path: str, user: str, password: str) -> None:
        while not stop.is_set():
            try:
                status, _ = _timed_auth(exporter.port, user, password, path=path)
            except (OSError, http.client.HTTPException):
                status = 0
            key = str(status) if str(status) in counts else "other"
            counts[key] += 1

    try:
        _wait_authenticated(exporter.port)
        workers = [threading.Thread(target=hammer, args=("/metrics", "prom", "wrong")) for _ in range(threads)]
        workers += [
            threading.Thread(target=hammer, args=(f"/probe?target=127.0.0.1:{stall.port}", "prom", "right"))
            for _ in range(threads)
        ]
        for worker in workers:
            worker.start()
        time.sleep(2)
        latencies, failures = [], 0
        for _ in range(int(duration)):
            try:
                status, took = _timed_auth(exporter.port, "prom", "right", path="/metrics")
            except (OSError, http.client.HTTPException):
                status, took = 0, 10.0
            failures += status != 200
            latencies.append(took)
            time.sleep(max(0.0, 1.0 - took))
        stop.set()
        for worker in workers:
            worker.join()
        ok = len(latencies) - failures
        return {"threads": threads, "scrapes": len(latencies), "ok": ok, "success": ok / len(latencies),
                "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99), "attackers": counts}  # fmt: skip
    finally:
        stop.set()
        exporter.close()
        stall.close()


# --- basic auth timing ---------------------------------------------------------------------------------------------


def _wait_authenticated(port: int, timeout: float = 60.0) -> None:
    """Wait until the exporter answers an authenticated request (it is up and its users are loaded)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _timed_auth(port, "prom", "right")
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
        else:
            return


def auth(*, rounds: int, work: Path) -> dict[str, Any]:
    """Median latency of an unknown user and of a known user with a wrong password, interleaved."""
    import bcrypt

    hashed = bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=12)).decode()  # as `htpasswd -nBC 12` makes
    (work / "web.yml").write_text(f"basic_auth_users: {{prom: '{hashed}'}}\n")
    exporter = Exporter("{}", work, extra=("--web.config.file", str(work / "web.yml")))
    try:
        _wait_authenticated(exporter.port)
        times: dict[str, list[float]] = {"unknown": [], "wrong": []}
        for _ in range(rounds):
            for name, user in (("unknown", "nobody"), ("wrong", "prom")):
                status, took = _timed_auth(exporter.port, user, "wrong")
                assert status == 401, status
                times[name].append(took)
        unknown, wrong = statistics.median(times["unknown"]), statistics.median(times["wrong"])
        return {"rounds": rounds, "unknown": unknown, "wrong": wrong, "difference": abs(unknown - wrong) / wrong}
    finally:
        exporter.close()


def _timed_auth(port: int, user: str, password: str, *, path: str = "/healthz") -> tuple[int, float]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    started = time.perf_counter()
    conn.request("GET", path, headers={"Authorization": f"Basic {token}", "Accept-Encoding": "gzip"})
    response = conn.getresponse()
    response.read()
    took = time.perf_counter() - started
    conn.close()
    return response.status, took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("scrapers")
    s.add_argument("--duration", type=float, default=60)
    s.add_argument("--scrapers", type=int, default=20)
    s.add_argument("--files", type=int, default=10_000)
    s.add_argument("--endpoints", type=int, default=200)
    s.add_argument("--interval", type=float, default=2)
    a = commands.add_parser("attack")
    a.add_argument("--tls", action="store_true")
    a.add_argument("--idle", type=int, default=1000)
    a.add_argument("--drip", type=int, default=200)
    a.add_argument("--duration", type=float, default=60)
    f = commands.add_parser("flood")
    f.add_argument("--threads", type=int, default=70)
    f.add_argument("--duration", type=float, default=60)
    u = commands.add_parser("auth")
    u.add_argument("--rounds", type=int, default=40)
    h = commands.add_parser("attacker")  # the holding client, run as its own process by `attack`
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--idle", type=int, default=1000)
    h.add_argument("--drip", type=int, default=200)
    h.add_argument("--tls", action="store_true")
    args = parser.parse_args()
    if args.command == "attacker":
        attacker(args.port, idle=args.idle, drip=args.drip, tls=args.tls)
        return 0
    _raise_nofile()
    work = Path(tempfile.mkdtemp(prefix="gce-load-"))
    print(f"machine: {machine()}", flush=True)
    if args.command == "scrapers":
        result = scrapers(
            duration=args.duration,
            count=args.scrapers,
            files=args.files,
            endpoints=args.endpoints,
            interval=args.interval,
            work=work,
        )
        print(json.dumps(result, indent=1))
        return 1 if result["errors"] or result["p99"] >= 0.1 else 0
    if args.command == "attack":
        result = attack(tls=args.tls, idle=args.idle, drip=args.drip, duration=args.duration, work=work)
        print(json.dumps(result, indent=1))
        return 1 if result["success"] < 0.95 or result["p99"] >= 1 else 0
    if args.command == "flood":
        result = flood(threads=args.threads, duration=args.duration, work=work)
        print(json.dumps(result, indent=1))
        return 1 if result["success"] < 0.95 or result["p99"] >= 1 else 0
    result = auth(rounds=args.rounds, work=work)
    print(json.dumps(result, indent=1))
    return 1 if result["difference"] >= 0.25 else 0


if __name__ == "__main__":
    raise SystemExit(main())
