"""web.py and service.py over real HTTP: routes, /probe allow-list, auth, TLS, config reload."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest

from gunicorn_cert_exporter import allowlist as probe
from gunicorn_cert_exporter.config import ConfigError
from gunicorn_cert_exporter.config_parts import ProbeConfig
from gunicorn_cert_exporter.web import webconfig
from tests.support import (
    PKI,
    Issued,
    RunningExporter,
    StartExporter,
    TLSServer,
    eventually,
    server_context,
    write_chain,
)


def test_routes(run_exporter: StartExporter, tmp_path: Path, root: Issued) -> None:
    (tmp_path / "ca.pem").write_bytes(root.cert_pem)
    exporter: RunningExporter = run_exporter(f"files: [{{paths: ['{tmp_path}/ca.pem']}}]")
    exporter.scan_now()
    assert exporter.get("/healthz") == (200, b"ok\n")
    assert exporter.metrics()[f'gunicorn_cert_file_up{{path="{tmp_path}/ca.pem"}}'] == 1
    status, page = exporter.get("/")
    assert status == 200
    assert b"Test Root CA" in page
    assert exporter.get("/nope")[0] == 404


def test_status_page_escapes_hostile_subjects(
    run_exporter: StartExporter, tmp_path: Path, pki: PKI, root: Issued
) -> None:
    evil = pki.leaf(root, "<script>alert(1)</script>")
    (tmp_path / "evil.pem").write_bytes(evil.cert_pem)
    exporter: RunningExporter = run_exporter(f"files: [{{paths: ['{tmp_path}/evil.pem']}}]")
    exporter.scan_now()
    _, page = exporter.get("/")
    assert page.count(b"<script>") == 1  # the page's own, last; none from the subject
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.parametrize(
    ("target", "ok"),
    [
        ("api.example.com:443", True),
        ("API.Example.COM:443", True),
        ("api.example.com:8443", False),  # other port
        ("example.com:443", False),
        ("evil-example.com:443", False),
        ("api.example.com.evil.net:443", False),
        ("user@api.example.com:443", False),  # userinfo
        ("api.example.com:443/path", False),  # path
        ("api.example.com:443?x=1", False),
        ("10.1.2.3:8443", True),
        ("10.1.2.3:443", False),
        ("11.0.0.1:8443", False),
        ("10.0.0.1.nip.io:8443", False),  # a name that starts like an allowed IP
        ("[::ffff:10.0.0.1]:8443", False),
        ("0x0a000001:8443", False),  # an IP spelled as a name that some resolvers accept
        ("127.0.0.1:9000", True),
        ("[::1]:9000", True),
        ("localhost:9000", False),
    ],
)
def test_probe_allow_list(target: str, ok: bool) -> None:
    allow = ProbeConfig(allow=["*.example.com:443", "10.0.0.0/8:8443", "127.0.0.1:*", "[::1]:*"]).patterns
    assert probe.allowed(target, allow) is ok


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f.1", "0177.0.0.1", "0x7f000001"])
def test_numeric_ipv4_spellings_match_no_name_pattern(host: str) -> None:
    """The resolver reads these as 127.0.0.1: a name glob such as ``*:443`` must not let them through."""
    assert probe.parse_target(f"{host}:443") is None
    assert not probe.allowed(f"{host}:443", ProbeConfig(allow=["*:443", "127.0.0.0/8:443"]).patterns)
    assert probe.allowed("api.example.com:443", ProbeConfig(allow=["*:443"]).patterns)


def test_probe_allow_patterns_are_parsed_once_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request matches against the patterns parsed at load: nothing of a pattern is parsed per request."""
    allow = ProbeConfig(allow=["10.0.0.0/8:8443", "*.example.com:443"]).patterns

    def no_parsing(*args: object, **kwargs: object) -> None:
        raise AssertionError("a pattern was parsed during a request")

    monkeypatch.setattr(ipaddress, "ip_network", no_parsing)
    assert probe.allowed("10.1.2.3:8443", allow) and probe.allowed("api.example.com:443", allow)
    assert not probe.allowed("11.0.0.1:8443", allow)


def test_probe_endpoint_refuses_and_probes(
    run_exporter: StartExporter, tls_server: type[TLSServer], pki: PKI, root: Issued
) -> None:
    leaf = pki.leaf(root)
    server = tls_server("127.0.0.1", context=server_context((leaf,)))
    exporter: RunningExporter = run_exporter(f"probe: {{allow: ['127.0.0.1:{server.port}'], timeout: 2s}}")
    assert exporter.get(f"/probe?target=127.0.0.1:{server.port + 1}")[0] == 403
    assert exporter.get(f"/probe?target=localhost:{server.port}")[0] == 403
    assert exporter.get("/probe")[0] == 400
    assert exporter.get(f"/probe?target=127.0.0.1:{server.port}&target=127.0.0.1:1")[0] == 400
    assert exporter.get(f"/probe?target=127.0.0.1:{server.port}&server_name=a%0Ab")[0] == 400
    status, body = exporter.get(f"/probe?target=127.0.0.1:{server.port}&server_name=localhost")
    assert status == 200
    text = body.decode()
    assert "gunicorn_cert_probe_success 1.0" in text
    assert leaf.fingerprint in text and "gunicorn_cert_file_" not in text  # its own registry


def _auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_auth(run_exporter: StartExporter) -> None:
    hashed = bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=4)).decode()
    exporter: RunningExporter = run_exporter("{}", users={"prom": hashed})
    assert exporter.get("/metrics")[0] == 401
    assert exporter.get("/metrics", Authorization=_auth("prom", "wrong"))[0] == 401
    assert exporter.get("/metrics", Authorization=_auth("nobody", "right"))[0] == 401
    assert exporter.get("/metrics", Authorization="Basic !!!")[0] == 401
    assert exporter.get("/metrics", Authorization=_auth("prom", "right"))[0] == 200


def test_unknown_user_costs_as_much_as_a_wrong_password() -> None:
    auth = webconfig.BasicAuth({"prom": bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=10)).decode()})

    def cost(user: str) -> float:  # CPU time of this thread: the bcrypt work, whatever else the machine runs
        started = time.thread_time()
        for _ in range(3):
            assert not auth.check(user, "wrong")
        return time.thread_time() - started

    known, unknown = cost("prom"), cost("no-such-user")
    assert 0.5 < unknown / known < 2.0, (known, unknown)


def test_tls_listener_picks_up_a_renewed_certificate(
    run_exporter: StartExporter, tmp_path: Path, pki: PKI, root: Issued
) -> None:
    first, second = pki.leaf(root), pki.leaf(root)
    cert_path, key_path = write_chain(tmp_path, "web", first)
    tls = webconfig.ReloadingContext(webconfig.TLSServerConfig(cert_file=str(cert_path), key_file=str(key_path)))
    exporter: RunningExporter = run_exporter("{}", tls=tls)
    client = ssl.create_default_context(cadata=root.cert_pem.decode())

    def served() -> str:
        with urllib.request.urlopen(exporter.url + "/healthz", context=client, timeout=5) as response:
            der = response.fp.raw._sock.getpeercert(binary_form=True)
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        return x509.load_der_x509_certificate(der).fingerprint(hashes.SHA256()).hex()

    assert served() == first.fingerprint
    write_chain(tmp_path, "web", second)
    # Without a restart: the files are looked at once a second at most, on the next handshake after that.
    eventually(lambda: served() == second.fingerprint, "the renewed certificate", timeout=10)


def test_a_renewal_that_does_not_load_is_tried_once_per_change_not_per_handshake(
    tmp_path: Path, pki: PKI, root: Issued, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken pair must not make every client handshake reload the files (it runs on the event loop)."""
    cert_path, key_path = write_chain(tmp_path, "web", pki.leaf(root))
    now = [100.0]
    context = webconfig.ReloadingContext(
        webconfig.TLSServerConfig(cert_file=str(cert_path), key_file=str(key_path)), clock=lambda: now[0]
    )
    good = context.current()
    builds: list[int] = []
    real_build = webconfig.build_context

    def counting(tls: webconfig.TLSServerConfig) -> ssl.SSLContext:
        builds.append(1)
        return real_build(tls)

    monkeypatch.setattr(webconfig, "build_context", counting)
    key_path.write_bytes(pki.leaf(root).key_pem)  # the key of another certificate: the pair does not load
    for _ in range(5):
        now[0] += 2.0
        assert context.current() is good  # the last good pair keeps serving
    assert len(builds) == 1
    for _ in range(50):
        now[0] += 0.01  # handshakes within a second: the files are not even looked at
        context.current()
    write_chain(tmp_path, "web", pki.leaf(root))  # fixed: a good pair again, loaded on the next look
    now[0] += 2.0
    assert context.current() is not good and len(builds) == 2


def test_web_config_requires_client_ca_for_verified_client_auth(tmp_path: Path, pki: PKI, root: Issued) -> None:
    cert_path, key_path = write_chain(tmp_path, "web", pki.leaf(root))
    path = tmp_path / "web.yml"
    path.write_text(
        f"tls_server_config: {{cert_file: {cert_path}, key_file: {key_path}, "
        "client_auth_type: RequireAndVerifyClientCert}\n"
    )
    with pytest.raises(ConfigError, match="client_ca_file"):
        webconfig.load(str(path))
    path.write_text("basic_auth_users: {prom: plaintext-password}\n")
    with pytest.raises(ConfigError, match="bcrypt"):
        webconfig.load(str(path))


def test_bad_config_reload_keeps_the_running_config(run_exporter: StartExporter, tmp_path: Path, root: Issued) -> None:
    (tmp_path / "a.pem").write_bytes(root.cert_pem)
    exporter: RunningExporter = run_exporter(f"files: [{{paths: ['{tmp_path}/a.pem']}}]")
    exporter.scan_now()
    exporter.config_path.write_text("scan: {interval: never}\n")
    import urllib.error

    request = urllib.request.Request(exporter.url + "/-/reload", method="POST")
    with pytest.raises(urllib.error.HTTPError) as failed:
        urllib.request.urlopen(request, timeout=5)
    assert failed.value.code == 500 and b"scan.interval" in failed.value.read()
    metrics = exporter.metrics()
    assert metrics["gunicorn_cert_exporter_config_last_reload_successful{}"] == 0
    assert metrics[f'gunicorn_cert_file_up{{path="{tmp_path}/a.pem"}}'] == 1
    assert exporter.service.config.scan.interval == 60
    exporter.config_path.write_text("scan: {interval: 30s}\n")
    # 200, or 429 within a second of the failed reload: then the reload is coalesced into the next, a second later.
    status, _ = exporter.post("/-/reload")
    assert status in (200, 429)
    eventually(lambda: exporter.service.config.scan.interval == 30, "the good config applied")
    assert exporter.metrics()["gunicorn_cert_exporter_config_last_reload_successful{}"] == 1


def test_metrics_in_openmetrics_and_gzip_carry_snapshot_and_live_series(
    run_exporter: StartExporter, root: Issued, tmp_path: Path
) -> None:
    import gzip

    from prometheus_client import CollectorRegistry, Gauge
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
    from prometheus_client.parser import text_string_to_metric_families

    (tmp_path / "a.pem").write_bytes(root.cert_pem)
    live = CollectorRegistry()
    Gauge("live_probe_gauge", "a live series", registry=live).set(7)
    exporter: RunningExporter = run_exporter(f"files: [{{paths: ['{tmp_path}/a.pem']}}]", live=live)
    exporter.scan_now()
    openmetrics = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    for accept in (openmetrics, ""):
        for encoding in ("gzip", "identity"):
            request = urllib.request.Request(
                exporter.url + "/metrics", headers={"Accept": accept, "Accept-Encoding": encoding}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                body = response.read()
                if encoding == "gzip":
                    assert response.headers["Content-Encoding"] == "gzip"
                    body = gzip.decompress(body)  # every member, as Prometheus reads them
            text = body.decode()
            parse = parse_openmetrics if accept else text_string_to_metric_families
            names = {f.name for f in parse(text)}
            assert {"gunicorn_cert_file_up", "live_probe_gauge"} <= names, (accept, encoding)
            if accept:
                assert text.endswith("# EOF\n") and text.count("# EOF") == 1


def _tls_exporter(run_exporter: StartExporter, tmp_path: Path, pki: PKI, root: Issued, **tls: str) -> RunningExporter:
    cert_path, key_path = write_chain(tmp_path, "web", pki.leaf(root))
    (tmp_path / "clients.pem").write_bytes(root.cert_pem)
    config = webconfig.TLSServerConfig.model_validate({"cert_file": str(cert_path), "key_file": str(key_path), **tls})
    return run_exporter("{}", tls=webconfig.ReloadingContext(config))


def test_client_certificates_are_required_and_verified(
    run_exporter: StartExporter, tmp_path: Path, pki: PKI, root: Issued
) -> None:
    exporter = _tls_exporter(
        run_exporter,
        tmp_path,
        pki,
        root,
        client_auth_type="RequireAndVerifyClientCert",
        client_ca_file=str(tmp_path / "clients.pem"),
    )
    trusted, stranger = pki.leaf(root, "prometheus", sans=()), pki.leaf(pki.ca("Other CA"), "intruder", sans=())

    def status(client: Issued | None) -> int | str:
        context = ssl.create_default_context(cadata=root.cert_pem.decode())
        if client is not None:
            write_chain(tmp_path, "client", client)
            context.load_cert_chain(tmp_path / "client.pem", tmp_path / "client.key")
        try:
            with urllib.request.urlopen(exporter.url + "/healthz", context=context, timeout=5) as response:
                return int(response.status)
        except (ssl.SSLError, ConnectionError, urllib.error.URLError) as exc:
            return type(exc).__name__

    assert status(trusted) == 200
    assert status(None) != 200
    assert status(stranger) != 200


def test_min_version_refuses_older_clients(run_exporter: StartExporter, tmp_path: Path, pki: PKI, root: Issued) -> None:
    exporter = _tls_exporter(run_exporter, tmp_path, pki, root, min_version="TLS13")
    old = ssl.create_default_context(cadata=root.cert_pem.decode())
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, urllib.error.URLError)):
        urllib.request.urlopen(exporter.url + "/healthz", context=old, timeout=5)
    new = ssl.create_default_context(cadata=root.cert_pem.decode())
    with urllib.request.urlopen(exporter.url + "/healthz", context=new, timeout=5) as response:
        assert response.status == 200


def test_file_names_that_are_not_utf8_are_shown_escaped(
    run_exporter: StartExporter, tmp_path: Path, root: Issued
) -> None:
    import os

    (tmp_path / os.fsdecode(b"bad\xff.pem")).write_bytes(root.cert_pem)
    exporter: RunningExporter = run_exporter(f"files: [{{paths: ['{tmp_path}/*.pem']}}]")
    exporter.scan_now()
    status, page = exporter.get("/")
    assert status == 200
    assert b"bad\\udcff.pem" in page
    assert any("bad\\udcff.pem" in key for key in exporter.metrics())


def _raw(exporter: RunningExporter, request: bytes, *, wait: float = 1.5) -> bytes:
    """Send raw bytes on one connection; return everything the server sends until it closes or goes quiet."""
    import socket

    with socket.create_connection(("127.0.0.1", exporter.port), timeout=10) as sock:
        sock.sendall(request)
        sock.settimeout(wait)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pass
    return received


def test_head_works_on_every_get_route(run_exporter: StartExporter) -> None:
    exporter: RunningExporter = run_exporter("probe: {allow: ['127.0.0.1:1']}")
    for path in ("/metrics", "/healthz", "/", "/probe"):
        answer = _raw(exporter, f"HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200" if path != "/probe" else b"HTTP/1.1 400"), (path, head)
        assert body == b"", path


def test_gzip_body_is_one_member_with_every_series(run_exporter: StartExporter, root: Issued, tmp_path: Path) -> None:
    import zlib

    (tmp_path / "a.pem").write_bytes(root.cert_pem)
    exporter: RunningExporter = run_exporter(f"files: [{{paths: ['{tmp_path}/a.pem']}}]")
    exporter.scan_now()
    for accept in ("", "application/openmetrics-text;version=1.0.0"):
        request = urllib.request.Request(
            exporter.url + "/metrics", headers={"Accept-Encoding": "gzip", "Accept": accept}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            compressed = response.read()
        reader = zlib.decompressobj(16 + zlib.MAX_WBITS)  # one gzip member, as `curl --compressed` reads it
        text = reader.decompress(compressed)
        assert reader.eof and reader.unused_data == b""
        plain = _raw_body(exporter, accept)
        assert _names(text) == _names(plain)
        assert text.count(b"\n") == plain.count(b"\n")
        assert b"gunicorn_cert_exporter_http_refused_total" in text and b"gunicorn_cert_file_up" in text


def _raw_body(exporter: RunningExporter, accept: str) -> bytes:
    request = urllib.request.Request(exporter.url + "/metrics", headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers.get("Content-Encoding") is None
        return bytes(response.read())


def _names(body: bytes) -> set[bytes]:
    return {line.split(b"{")[0].split(b" ")[0] for line in body.splitlines() if line and not line.startswith(b"#")}


@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"),
    [("gzip", True), ("gzip;q=0", False), ("gzip; q=0.0, identity", False), ("*;q=0.5", True), ("br", False)],
)
def test_accept_encoding_q_values_are_honoured(
    run_exporter: StartExporter, accept_encoding: str, gzipped: bool
) -> None:
    exporter: RunningExporter = run_exporter("{}")
    request = urllib.request.Request(exporter.url + "/metrics", headers={"Accept-Encoding": accept_encoding})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert (response.headers.get("Content-Encoding") == "gzip") is gzipped
        body = response.read()
    assert body.startswith(b"\x1f\x8b") is gzipped


def test_a_request_smuggled_in_a_post_body_never_gets_its_own_answer(run_exporter: StartExporter) -> None:
    exporter: RunningExporter = run_exporter("{}")
    smuggled = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    request = (b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(smuggled)) + smuggled
    answer = _raw(exporter, request)
    assert answer.count(b"HTTP/1.1 ") == 1, answer
    assert answer.startswith(b"HTTP/1.1 200") and b"ok\n" not in answer


def test_a_large_post_body_is_refused_and_the_connection_closed(run_exporter: StartExporter) -> None:
    exporter: RunningExporter = run_exporter("{}")
    body = b"x" * (65 * 1024)
    answer = _raw(exporter, b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert answer.startswith(b"HTTP/1.1 413") and answer.count(b"HTTP/1.1 ") == 1
    assert exporter.metrics()['gunicorn_cert_exporter_http_refused_total{reason="body_too_large"}'] == 1


def test_unknown_users_are_checked_against_a_hash_as_slow_as_the_slowest_user() -> None:
    fast, slow = (bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=r)).decode() for r in (4, 7))
    auth = webconfig.BasicAuth({"fast": fast, "slow": slow})
    assert webconfig.bcrypt_cost(auth.dummy_hash) == 7
    assert not auth.check("nobody", "pw") and auth.check("slow", "pw") and not auth.check("slow", "nope")


def test_bcrypt_checks_are_bounded_and_the_rest_answered_at_once(run_exporter: StartExporter) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from gunicorn_cert_exporter.web.connections import Limits

    hashed = bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=12)).decode()
    exporter: RunningExporter = run_exporter("{}", users={"prom": hashed}, limits=Limits(auth_checks=1))
    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(lambda _: exporter.get("/healthz", Authorization=_auth("prom", "x"))[0], range(12)))
    assert set(statuses) <= {401, 429} and 429 in statuses, statuses
    # the server still answers; the right password passes once a bcrypt slot is free, and is then remembered
    assert eventually(lambda: exporter.get("/healthz", Authorization=_auth("prom", "right"))[0] == 200, "auth")


def test_probes_are_bounded(run_exporter: StartExporter, tls_server: type[TLSServer]) -> None:
    import threading

    from gunicorn_cert_exporter.web.connections import Limits

    stall = tls_server("127.0.0.1", mode="stall")
    exporter: RunningExporter = run_exporter(
        f"probe: {{allow: ['127.0.0.1:{stall.port}'], timeout: 60s}}", limits=Limits(probes=1)
    )
    statuses: list[int] = []

    def probe() -> None:
        statuses.append(exporter.get(f"/probe?target=127.0.0.1:{stall.port}")[0])

    threads = [threading.Thread(target=probe) for _ in range(2)]
    for thread in threads:
        thread.start()
    # The holder's probe lasts its 60 s timeout, until the stall server hangs up below: no race with a clock.
    eventually(lambda: statuses == [503], "one probe refused while the other holds the only slot")
    assert exporter.get("/healthz") == (200, b"ok\n")  # the server answers meanwhile
    stall.close()  # the held handshake fails at once: the holder gets its answer
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) == [200, 503]
    assert exporter.metrics()['gunicorn_cert_exporter_http_refused_total{reason="probe_busy"}'] >= 1


def test_listens_on_several_addresses_ipv6_too(tmp_path: Path) -> None:
    from gunicorn_cert_exporter.exporter import Exporter, Options
    from tests.support import ipv6_available

    addresses = ("127.0.0.1:0", "[::1]:0") if ipv6_available() else ("127.0.0.1:0", "127.0.0.2:0")
    (tmp_path / "config.yaml").write_text("{}")
    exporter = Exporter(str(tmp_path / "config.yaml"), Options(listen=addresses))
    exporter.start(schedule=False)
    try:
        for host, port in exporter.addresses:
            url_host = f"[{host}]" if ":" in host else host
            with urllib.request.urlopen(f"http://{url_host}:{port}/healthz", timeout=10) as response:
                assert response.read() == b"ok\n"
    finally:
        exporter.stop()


def test_a_probe_slot_is_held_until_the_probe_ends_even_if_its_client_leaves(
    run_exporter: StartExporter, tls_server: type[TLSServer]
) -> None:
    """Clients that ask and hang up at once must not pile up probes behind the bound."""
    import socket

    from gunicorn_cert_exporter.web.connections import Limits

    stall = tls_server("127.0.0.1", mode="stall")
    exporter: RunningExporter = run_exporter(
        f"probe: {{allow: ['127.0.0.1:{stall.port}'], timeout: 10s}}", limits=Limits(probes=1)
    )
    with socket.create_connection(("127.0.0.1", exporter.port), timeout=10) as sock:
        sock.sendall(f"GET /probe?target=127.0.0.1:{stall.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        eventually(lambda: stall.held, "the probe to reach the stalled server")
    eventually(lambda: exporter.server.guard.open == 0, "the exporter to see the client leave")
    assert exporter.get(f"/probe?target=127.0.0.1:{stall.port}")[0] == 503


def test_a_shutdown_that_fails_is_logged_and_the_server_still_stops(
    run_exporter: StartExporter, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from gunicorn_cert_exporter.web.server import WebServer

    exporter: RunningExporter = run_exporter("{}")

    async def broken(self: WebServer) -> None:
        raise RuntimeError("cleanup failed")

    monkeypatch.setattr(WebServer, "_shutdown", broken)
    exporter.close()
    warnings = [r for r in caplog.records if r.message.startswith("HTTP server shutdown did not complete")]
    assert len(warnings) == 1 and warnings[0].exc_info is not None
    with pytest.raises(OSError):
        exporter.get("/healthz")  # the listener is closed all the same
    # and no task is left pending in the stopped loop (each would be "destroyed but pending" at exit)
    assert not asyncio.all_tasks(exporter.server._loop)
