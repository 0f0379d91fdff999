"""The whole story on one machine: throwaway CA, a real TLS Gunicorn, rotation, drift, safe HUP, drift gone."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gunicorn_cert_exporter import config
from gunicorn_cert_exporter.demo_workers import Workers
from gunicorn_cert_exporter.exporter import Exporter, Options
from gunicorn_cert_exporter.sources.endpoints import Prober


class _Gunicorn:
    """The demo's Gunicorn: TLS on a loopback port, ``asgi`` workers, a pidfile; stopped at the end of the story."""

    def __init__(self, directory: Path, *, cert: Path, key: Path, workers: int = 2, args: tuple[str, ...] = ()) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.address = f"127.0.0.1:{self.port}"
        self.pidfile = directory / "gunicorn.pid"
        self._log = directory / "gunicorn.log"
        command = [
            sys.executable, "-m", "gunicorn", "-k", "asgi", "-w", str(workers), "--certfile", str(cert),
            "--keyfile", str(key), "-b", self.address, "--pid", str(self.pidfile), "--graceful-timeout", "5",
            *args, "gunicorn_cert_exporter.demo_app:asgi_app",
        ]  # fmt: skip
        with open(self._log, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=directory)
        self._wait_booted(workers)

    def _wait_booted(self, workers: int, timeout: float = 30.0) -> None:
        """Wait for every worker to boot: one still booting while the pair is renewed would load half of it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self._log.read_text()[-2000:]}")
            if self._log.read_text().count("Booting worker") >= workers and self._serves_tls():
                time.sleep(1.0)  # a booted worker still imports the app and loads the cert
                return
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn not ready after {timeout:.0f}s: {self._log.read_text()[-2000:]}")

    def _serves_tls(self) -> bool:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock, context.wrap_socket(sock):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Stop Gunicorn and its workers."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def issue(
    cn: str,
    *,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    days: float,
    ca: bool | None = None,
    age: dt.timedelta = dt.timedelta(minutes=5),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Issue a throwaway certificate valid from ``age`` ago for ``days`` more; a root when ``issuer`` is None.

    Leaves (``ca`` false, the default for issued certificates) name localhost and 127.0.0.1.
    """
    is_ca = issuer is None if ca is None else ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - age)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if not is_ca:
        loopback = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(loopback), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key


def write_pair(
    cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, cert_path: Path, key_path: Path, *, key_mode: int = 0o600
) -> None:
    """Write a cert/key pair the way a careful renewer does: each file renamed into place, the key's mode set first."""
    for path, data, mode in (
        (key_path, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), key_mode),
        (cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644),
    ):  # fmt: skip
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.chmod(mode)
        os.replace(tmp, path)


def _sample(metrics: str, name: str) -> float | None:
    match = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", metrics, re.MULTILINE)
    return float(match.group(1)) if match else None


def _say(step: str, text: str) -> None:
    print(f"{step:>6}  {text}", flush=True)


def run() -> int:
    """Run the demo; return 0 when the story ends with the drift gone, 1 otherwise."""
    if not _importable("gunicorn"):
        print("the demo needs Gunicorn: pip install 'gunicorn-cert-exporter[demo]'", file=sys.stderr)
        return 3
    # The demo scans every second; a reload being confirmed overruns that, which APScheduler would narrate.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="gce-demo-"))
    launched: list[_Gunicorn] = []
    try:
        return _story(work, launched)
    except (TimeoutError, RuntimeError, OSError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for proc in launched:
            proc.stop()
        shutil.rmtree(work, ignore_errors=True)


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _story(work: Path, launched: list[_Gunicorn]) -> int:

    started = time.monotonic()
    work.chmod(0o755)  # the workers may run as nobody: they must reach the files
    workers = Workers()
    ca = issue("gunicorn-cert-exporter demo CA", issuer=None, days=30)
    old = issue("localhost", issuer=ca, days=20)
    cert_path, key_path = work / "cert.pem", work / "key.pem"
    write_pair(*old, cert_path, key_path)
    workers.install(key_path)
    (work / "ca.pem").write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    fp_old = old[0].fingerprint(hashes.SHA256()).hex()
    _say(STEPS[0], f"throwaway CA and a 20-day leaf {fp_old[:16]} in {work}")
    server = _Gunicorn(work, cert=cert_path, key=key_path, args=workers.args)
    launched.append(server)
    pid = server.pidfile.read_text().strip()
    _say(STEPS[1], f"Gunicorn (asgi: loads the cert once per worker) on {server.address}, master {pid}, {workers.who}")
    (work / "config.yaml").write_text(
        "scan: {interval: 1s, jitter: 0%}\n"
        f"files: [{{paths: ['{work / 'lifetimes'}/*.pem']}}]\n"
        f"gunicorn:\n  - name: demo\n    cert_file: {cert_path}\n    key_file: {key_path}\n"
        f"    endpoint: '{server.address}'\n    server_name: localhost\n    ca_file: {work / 'ca.pem'}\n"
        f"    pidfile: {server.pidfile}\n"
        "    reload: {enabled: true, after: 2s, cooldown: 1m, max_per_hour: 2, verify_timeout: 20s}\n"
    )
    exporter = Exporter(str(work / "config.yaml"), Options(listen=("127.0.0.1:0",)))
    url = f"http://127.0.0.1:{exporter.addresses[0][1]}/metrics"
    exporter.start()
    try:
        metrics = _wait(url, lambda m: _sample(m, MISMATCH) == 0.0)
        _say(STEPS[2], f"exporter at {url}: master_up={_sample(metrics, 'gunicorn_cert_master_up')}, "
                       f"key_match={_sample(metrics, 'gunicorn_cert_key_match')}, fingerprint_mismatch=0")  # fmt: skip
        _say(STEPS[3], _lifetimes(work, url, ca))
        ok = _rotation(work, url, ca, workers, server)
        print(f"\n{'done' if ok else 'FAILED'} in {time.monotonic() - started:.1f}s", flush=True)
        return 0 if ok else 1
    finally:
        exporter.stop()


STEPS = tuple(f"{i}/10" for i in range(1, 11))
MISMATCH = 'gunicorn_cert_fingerprint_mismatch{address="127.0.0.1",target="demo"}'


def _rotation(work: Path, url: str, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], workers: Workers,
              server: _Gunicorn) -> bool:  # fmt: skip
    """Renew with a key the workers can't read: drift, the reload blocked and why; fix the key: HUP, new leaf."""
    cert_path, key_path = work / "cert.pem", work / "key.pem"
    metrics = _wait(url, lambda m: _sample(m, MISMATCH) == 0.0)
    reload_before = _sample(metrics, "gunicorn_cert_last_reload_timestamp_seconds") or 0.0
    new = issue("localhost", issuer=ca, days=90)
    fp_new = new[0].fingerprint(hashes.SHA256()).hex()
    time.sleep(1.1)  # let the new file's mtime fall after the workers' start, as a real renewal would
    write_pair(*new, cert_path, key_path, key_mode=workers.renewed_mode)
    _say(STEPS[4], f"renewed on disk: 90-day leaf {fp_new[:16]}, its key written {workers.renewed_mode:04o} (as certbot"
                   " writes a new key: the workers' group and read bit are gone)")  # fmt: skip
    metrics = _wait(url, lambda m: _sample(m, MISMATCH) == 1.0)
    _say(STEPS[5], "Gunicorn still serves the old leaf: gunicorn_cert_fingerprint_mismatch=1 (drift)")
    if workers.blocks:
        target = _target(url, lambda t: t["decision_rule"] in workers.blocked_by)
        can_read = {a["file"]: a["access"] for a in target["runbook"]["access"]}
        key = can_read.get("key", "unreadable")
        _say(STEPS[6], f"key {key} to the workers: reload blocked, no HUP ({target['decision_reason']})")
        _say(STEPS[7], f"fixed: {workers.fix(key_path)}")
    else:
        _say(STEPS[6], "the workers run as root here and read any key: no access check to show")
        _say(STEPS[7], f"kept: {workers.fix(key_path)}")
    metrics = _wait(url, lambda m: (_sample(m, "gunicorn_cert_reload_signals_total") or 0) >= 1, timeout=30)
    _say(STEPS[8], f"files readable as the workers, pair valid, master {server.pidfile.read_text().strip()} proven: "
                   "SIGHUP sent")  # fmt: skip
    metrics = _wait(url, lambda m: _sample(m, MISMATCH) == 0.0, timeout=30)
    loaded = config.load_file(str(work / "config.yaml"))
    served = Prober().probe(loaded.gunicorn[0].as_endpoint()).addresses[0].leaf
    last_reload = _sample(metrics, "gunicorn_cert_last_reload_timestamp_seconds") or 0.0
    signals = _sample(metrics, "gunicorn_cert_reload_signals_total")
    failures = _sample(metrics, "gunicorn_cert_reload_failures_total")
    _say(STEPS[9], f"drift gone: served leaf {served.fingerprint_sha256[:16] if served else '-'}, "
                   f"signals_total={signals:.0f}, failures_total={failures:.0f}, "
                   f"last_reload moved {last_reload - reload_before:+.1f}s, master still {server.pidfile.read_text().strip()}")  # fmt: skip # noqa: E501
    return served is not None and served.fingerprint_sha256 == fp_new and failures == 0 and signals == 1


def _target(url: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Wait until the status API's target satisfies ``done``; return it."""
    found: list[dict[str, Any]] = []

    def check(text: str) -> bool:
        found[:] = json.loads(text)["targets"]
        return bool(found) and done(found[0])

    _wait(url.replace("/metrics", "/api/v1/status"), check)
    return found[0]


def _lifetimes(work: Path, url: str, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]) -> str:
    """Put a fresh 160-hour leaf beside a stale 90-day one and say how the status API judges each."""
    (work / "lifetimes").mkdir()
    for name, days, age in (("short-lived", 159 / 24, dt.timedelta(hours=1)), ("stale", 20, dt.timedelta(days=70))):
        cert, _ = issue(f"{name}.example", issuer=ca, days=days, age=age)
        (work / "lifetimes" / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    api = url.replace("/metrics", "/api/v1/status")
    files = {"short-lived.pem": "", "stale.pem": ""}

    def judged(text: str) -> bool:
        for source in json.loads(text)["sources"]:
            name = os.path.basename(source["source"])
            if name in files and source["certs"]:
                cert = source["certs"][0]
                files[name] = f"{cert['band']} ({cert['days_left']:.1f} d left, {cert['share_left']:.0%} of its life)"
        return all(files.values())

    _wait(api, judged)
    return (
        f"lifetime bands: a 160-hour leaf issued an hour ago is {files['short-lived.pem']}; a 90-day leaf "
        f"never renewed is {files['stale.pem']}"
    )


def _wait(url: str, done: Callable[[str], bool], timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310  (our own loopback URL)
            metrics = str(response.read().decode())
        if done(metrics):
            return metrics
        if time.monotonic() > deadline:
            raise TimeoutError(f"the demo did not reach the next step within {timeout:.0f}s")
        time.sleep(0.2)
