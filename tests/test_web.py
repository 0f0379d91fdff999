"""web.py and service.py over real HTTP: routes, /probe allow-list, auth, TLS, config reload."""

from __future__ import annotations

import base64
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest

from gunicorn_cert_exporter import allowlist as probe
from gunicorn_cert_exporter.web import webconfig
from tests.support import PKI, Issued, RunningExporter, StartExporter, TLSServer, server_context, write_chain


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
    assert b"<script>" not in page and b"&lt;script&gt;alert(1)&lt;/script&gt;" in page


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
    allow = ["*.example.com:443", "10.0.0.0/8:8443", "127.0.0.1:*", "[::1]:*"]
    assert probe.allowed(target, allow) is ok


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

    def cost(user: str) -> float:
        started = time.perf_counter()
        for _ in range(3):
            assert not auth.check(user, "wrong")
        return time.perf_counter() - started

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
    assert served() == second.fingerprint  # the next handshake, without a restart


def test_web_config_requires_client_ca_for_verified_client_auth(tmp_path: Path, pki: PKI, root: Issued) -> None:
    cert_path, key_path = write_chain(tmp_path, "web", pki.leaf(root))
    path = tmp_path / "web.yml"
    path.write_text(
        f"tls_server_config: {{cert_file: {cert_path}, key_file: {key_path}, "
        "client_auth_type: RequireAndVerifyClientCert}\n"
    )
    with pytest.raises(webconfig.ConfigError, match="client_ca_file"):
        webconfig.load(str(path))
    path.write_text("basic_auth_users: {prom: plaintext-password}\n")
    with pytest.raises(webconfig.ConfigError, match="bcrypt"):
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
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    assert exporter.metrics()["gunicorn_cert_exporter_config_last_reload_successful{}"] == 1
    assert exporter.service.config.scan.interval == 30


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
    config = webconfig.TLSServerConfig(cert_file=str(cert_path), key_file=str(key_path), **tls)  # type: ignore[arg-type]
    return run_exporter("{}", tls=webconfig.ReloadingContext(config))  # type: ignore[operator, no-any-return]


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
