"""endpoints.py against real TLS servers on 127.0.0.1 and ::1: chains, verification reasons, failures."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import ssl
import threading
from pathlib import Path
from typing import ClassVar, TypedDict

import pytest
from prometheus_client import CollectorRegistry

from gunicorn_cert_exporter.config import EndpointConfig
from gunicorn_cert_exporter.metrics.collector import SnapshotCollector
from gunicorn_cert_exporter.model import AddressResult, EndpointReason, EndpointResult, VerifyReason
from gunicorn_cert_exporter.scanning.store import Store
from gunicorn_cert_exporter.sources.endpoints import MAX_CONTEXTS, Prober, system_resolver
from tests.support import (
    DAY,
    NOW,
    PKI,
    Issued,
    StartExporter,
    TLSServer,
    ipv6_available,
    server_context,
    write_pair,
)

HOSTS = ["127.0.0.1", pytest.param("::1", marks=pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback"))]


@pytest.fixture
def ca_file(tmp_path: Path, root: Issued) -> str:
    path = tmp_path / "ca.pem"
    path.write_bytes(root.cert_pem)
    return str(path)


def probe_one(
    server: TLSServer,
    *,
    ca_file: str | None = None,
    server_name: str | None = None,
    timeout: float = 3.0,
    client_cert: str | None = None,
    client_key: str | None = None,
) -> AddressResult:
    config = EndpointConfig(
        address=server.address,
        server_name=server_name,
        ca_file=ca_file,
        timeout=timeout,
        client_cert=client_cert,
        client_key=client_key,
    )
    result = Prober().probe(config)
    assert result.error is None and len(result.addresses) == 1
    return result.addresses[0]


@pytest.mark.parametrize("host", HOSTS)
def test_good_chain_is_served_whole_and_verified(
    host: str, tls_server: type[TLSServer], pki: PKI, root: Issued, intermediate: Issued, ca_file: str
) -> None:
    leaf = pki.leaf(intermediate)
    server = tls_server(host, context=server_context((leaf, intermediate)))
    result = probe_one(server, ca_file=ca_file, server_name="localhost")
    assert result.verified and result.verify_error is None
    assert [c.fingerprint_sha256 for c in result.chain] == [leaf.fingerprint, intermediate.fingerprint]
    assert result.tls_version.startswith("TLS") and result.cipher
    assert 0 < result.handshake_seconds <= 3.0  # measured, and within probe_one's timeout (else it would be STALLED)
    assert result.address == host


class Validity(TypedDict):
    """A certificate's validity period, passed to ``PKI.issue`` or ``PKI.leaf`` as its keywords."""

    not_before: dt.datetime
    not_after: dt.datetime


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("expired_leaf", VerifyReason.EXPIRED),
        ("expired_intermediate", VerifyReason.EXPIRED),
        ("not_yet_valid", VerifyReason.NOT_YET_VALID),
        ("self_signed", VerifyReason.SELF_SIGNED),
        ("wrong_hostname", VerifyReason.HOSTNAME_MISMATCH),
        ("incomplete_chain", VerifyReason.INCOMPLETE_CHAIN),
        ("unknown_ca", VerifyReason.UNKNOWN_CA),
        ("unknown_private_ca", VerifyReason.UNKNOWN_CA),
    ],
)
def test_unverifiable_chains_still_give_metrics_and_say_why(
    host: str,
    case: str,
    reason: VerifyReason,
    tls_server: type[TLSServer],
    pki: PKI,
    root: Issued,
    intermediate: Issued,
    ca_file: str,
) -> None:
    past: Validity = {"not_before": NOW - 30 * DAY, "not_after": NOW - DAY}
    chain: tuple[Issued, ...]
    if case == "expired_leaf":
        chain = (pki.leaf(intermediate, **past), intermediate)
    elif case == "expired_intermediate":
        old_ca = pki.issue("Expired Intermediate", issuer=root, ca=True, **past)
        chain = (pki.leaf(old_ca), old_ca)
    elif case == "not_yet_valid":
        chain = (pki.leaf(intermediate, not_before=NOW + DAY, not_after=NOW + 9 * DAY), intermediate)
    elif case == "self_signed":
        chain = (pki.issue("localhost", sans=("localhost",)),)
    elif case == "wrong_hostname":
        chain = (pki.leaf(intermediate, "other.example", sans=("other.example",)), intermediate)
    elif case == "incomplete_chain":
        chain = (pki.leaf(intermediate, ca_issuers="http://ca.test/intermediate.der"),)
    elif case == "unknown_private_ca":
        chain = (pki.leaf(pki.ca("Private Root")),)
    else:
        stranger = pki.ca("Stranger Root")
        stranger_int = pki.issue("Stranger Intermediate", issuer=stranger, ca=True)
        chain = (pki.leaf(stranger_int), stranger_int)
    server = tls_server(host, context=server_context(chain))
    result = probe_one(server, ca_file=ca_file, server_name="localhost")
    assert result.up and not result.verified
    assert result.verify_error is reason
    assert [c.fingerprint_sha256 for c in result.chain] == [c.fingerprint for c in chain]
    assert result.chain[0].not_after == chain[0].cert.not_valid_after_utc.timestamp()


def test_ip_literal_without_server_name_verifies_against_ip_sans(
    tls_server: type[TLSServer], pki: PKI, root: Issued, ca_file: str
) -> None:
    server = tls_server("127.0.0.1", context=server_context((pki.leaf(root),)))
    assert probe_one(server, ca_file=ca_file).verified
    no_ip = tls_server("127.0.0.1", context=server_context((pki.leaf(root, sans=("localhost",)),)))
    assert probe_one(no_ip, ca_file=ca_file).verify_error is VerifyReason.HOSTNAME_MISMATCH


def test_client_certificate_is_presented_for_mtls(
    tmp_path: Path, tls_server: type[TLSServer], pki: PKI, root: Issued, ca_file: str
) -> None:
    client = pki.leaf(root, "exporter", sans=())
    (tmp_path / "client.pem").write_bytes(client.cert_pem)
    (tmp_path / "client.key").write_bytes(client.key_pem)
    context = server_context((pki.leaf(root),), client_ca=root)
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # the server's refusal then surfaces in the handshake
    server = tls_server("127.0.0.1", context=context)
    with_cert = probe_one(
        server, ca_file=ca_file, client_cert=str(tmp_path / "client.pem"), client_key=str(tmp_path / "client.key")
    )
    assert with_cert.up and with_cert.verified
    without = probe_one(server, ca_file=ca_file)
    assert without.error is EndpointReason.HANDSHAKE_FAILURE
    missing = probe_one(
        server, ca_file=ca_file, client_cert=str(tmp_path / "nope.pem"), client_key=str(tmp_path / "nope.key")
    )
    assert missing.error is EndpointReason.CLIENT_CERT_UNAVAILABLE
    no_ca = probe_one(server, ca_file=str(tmp_path / "no-such-ca.pem"))
    assert no_ca.error is EndpointReason.CA_FILE_UNAVAILABLE


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize(
    ("mode", "reason"),
    [("plaintext", EndpointReason.PLAINTEXT), ("stall", EndpointReason.STALLED), ("reset", EndpointReason.RESET)],
)
def test_broken_servers_each_have_a_reason(
    host: str, mode: str, reason: EndpointReason, tls_server: type[TLSServer]
) -> None:
    server = tls_server(host, mode=mode)
    result = probe_one(server, timeout=1.0)
    assert result.error is reason and result.chain == ()  # a stall ends at the timeout: STALLED says it did


def test_refused_and_dns_failure() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: refused
        refused = Prober().probe(EndpointConfig(address=f"127.0.0.1:{port}", timeout=2))
    assert refused.addresses[0].error is EndpointReason.REFUSED
    nx = Prober().probe(EndpointConfig(address="does-not-exist.invalid:443", timeout=2))
    assert nx.error is EndpointReason.DNS_FAILURE and nx.addresses == ()


class _RenamingResolver:
    """Resolve the endpoint's host as another real name: the name an endpoint has can stop resolving mid-test."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, host: str, port: int) -> list[tuple[int, str]]:
        return system_resolver(self.name, port)


def _series(result: EndpointResult) -> dict[tuple[str, str, str], float]:
    """Return the endpoint series of one result as the exposition has them: (name, address, reason) -> value."""
    store = Store()
    store.update(endpoints=(result,))
    registry = CollectorRegistry(auto_describe=True)
    registry.register(SnapshotCollector(lambda: store.snapshot))
    return {
        (s.name, s.labels.get("address", ""), s.labels.get("reason", "")): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name.startswith("gunicorn_cert_endpoint_")
    }


def test_addresses_seen_before_stay_down_with_dns_failure_while_the_name_does_not_resolve(
    tls_server: type[TLSServer], pki: PKI, root: Issued, ca_file: str
) -> None:
    """SPEC §5: a series that exists keeps existing while its source is broken, and carries no invented chain."""
    server = tls_server("127.0.0.1", context=server_context((pki.leaf(root),)))
    resolver = _RenamingResolver("localhost")
    config = EndpointConfig(address=f"app.test:{server.port}", server_name="localhost", ca_file=ca_file, timeout=3)
    prober = Prober(resolver=resolver)
    prober.track([config])
    before = prober.probe(config)
    seen = [a.address for a in before.addresses]
    assert before.error is None and "127.0.0.1" in seen
    assert _series(before)[("gunicorn_cert_endpoint_up", "127.0.0.1", "")] == 1

    resolver.name = "does-not-exist.invalid"  # the DNS record is gone: a real lookup that fails
    during = prober.probe(config)
    assert during.error is EndpointReason.DNS_FAILURE
    assert [a.address for a in during.addresses] == seen
    assert all(a.error is EndpointReason.DNS_FAILURE and a.chain == () and not a.verified for a in during.addresses)
    series = _series(during)
    for address in seen:
        assert series[("gunicorn_cert_endpoint_up", address, "")] == 0
        assert series[("gunicorn_cert_endpoint_error", address, "dns_failure")] == 1
    assert ("gunicorn_cert_endpoint_up", "", "") not in series  # no address-less series beside the known ones
    assert series[("gunicorn_cert_endpoint_addresses", "", "")] == 0  # it resolves to nothing now
    facts = ("not_after_timestamp_seconds", "info", "verified", "tls_info", "handshake_duration_seconds")
    assert not [key for key in series if key[0].removeprefix("gunicorn_cert_endpoint_") in facts]

    resolver.name = "localhost"
    after = prober.probe(config)
    assert after.error is None and after.addresses[seen.index("127.0.0.1")].up


def test_the_exporter_keeps_address_series_of_endpoints_and_targets_and_drift_turns_unknown(
    run_exporter: StartExporter, tmp_path: Path, tls_server: type[TLSServer], pki: PKI, root: Issued, ca_file: str
) -> None:
    """While a name fails to resolve: series stay on the last addresses, and the target's drift is unknown, not 1."""
    server = tls_server("127.0.0.1", context=server_context((pki.leaf(root),)))
    write_pair(pki.leaf(root), tmp_path / "cert.pem", tmp_path / "key.pem")  # another leaf than served: drift
    resolver = _RenamingResolver("localhost")
    exporter = run_exporter(
        f"endpoints: [{{address: 'api.test:{server.port}', server_name: localhost, ca_file: '{ca_file}'}}]\n"
        f"gunicorn: [{{name: app, cert_file: {tmp_path}/cert.pem, key_file: {tmp_path}/key.pem, ca_file: '{ca_file}',"
        f" endpoint: 'app.test:{server.port}', server_name: localhost, pid: 999999}}]\n",
        prober=Prober(resolver=resolver),
    )

    def sample(name: str, endpoint: str, **labels: str) -> str:  # as parse_samples spells it: labels sorted
        labels = {**labels, "endpoint": f"{endpoint}.test:{server.port}", "server_name": "localhost"}
        return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"

    exporter.scan_now()
    metrics = exporter.metrics()
    for endpoint in ("api", "app"):
        assert metrics[sample("gunicorn_cert_endpoint_up", endpoint, address="127.0.0.1")] == 1
    assert metrics['gunicorn_cert_fingerprint_mismatch{address="127.0.0.1",target="app"}'] == 1

    resolver.name = "does-not-exist.invalid"
    exporter.scan_now()
    metrics = exporter.metrics()
    for endpoint in ("api", "app"):
        assert metrics[sample("gunicorn_cert_endpoint_up", endpoint, address="127.0.0.1")] == 0
        assert metrics[sample("gunicorn_cert_endpoint_error", endpoint, address="127.0.0.1", reason="dns_failure")] == 1
        assert sample("gunicorn_cert_endpoint_up", endpoint, address="") not in metrics
    assert metrics['gunicorn_cert_fingerprint_mismatch{address="127.0.0.1",target="app"}'] == 0
    (target,) = exporter.service.snapshot().targets
    assert (target.decision, target.decision_reason) == ("none", "drift unknown: no address served a certificate")
    status, body = exporter.get("/api/v1/status")
    (row,) = json.loads(body)["targets"]
    assert status == 200 and row["drift"] == "unknown"
    assert row["addresses"] == [{"address": "127.0.0.1", "state": "unknown", "since": None, "reason": "dns_failure"}]


def test_only_endpoints_of_the_config_are_remembered(tls_server: type[TLSServer], pki: PKI, root: Issued) -> None:
    """The memory is bounded by the config: a /probe target, or an endpoint that left the config, is not kept."""
    server = tls_server("127.0.0.1", context=server_context((pki.leaf(root),)))
    resolver = _RenamingResolver("localhost")
    kept = EndpointConfig(address=f"kept.test:{server.port}", timeout=3)
    leaving = EndpointConfig(address=f"leaving.test:{server.port}", timeout=3)
    untracked = EndpointConfig(address=f"probed.test:{server.port}", timeout=3)
    prober = Prober(resolver=resolver)
    prober.track([kept, leaving])
    prober.probe_all([kept, leaving, untracked], concurrency=4)
    prober.track([kept])  # a config reload without `leaving`, then one that brings it back
    prober.track([kept, leaving])
    resolver.name = "does-not-exist.invalid"
    results = {r.endpoint: r for r in prober.probe_all([kept, leaving, untracked], concurrency=4)}
    assert all(r.error is EndpointReason.DNS_FAILURE for r in results.values())
    assert results[kept.address].addresses != ()
    assert results[leaving.address].addresses == results[untracked.address].addresses == ()
    series = _series(results[untracked.address])
    assert series[("gunicorn_cert_endpoint_up", "", "")] == 0  # nothing known: the address-less form
    assert series[("gunicorn_cert_endpoint_error", "", "dns_failure")] == 1


def test_every_resolved_address_is_probed_separately(
    tls_server: type[TLSServer], pki: PKI, root: Issued, ca_file: str
) -> None:
    if not ipv6_available():
        pytest.skip("no IPv6 loopback")
    fresh, stale = pki.leaf(root), pki.leaf(root, not_after=NOW + 2 * DAY)
    for _ in range(20):  # one port on both loopbacks: retry the rare port that is free on one only
        v4 = tls_server("127.0.0.1", context=server_context((fresh,)))
        if _free6(v4.port):
            tls_server("::1", context=server_context((stale,)), port=v4.port)
            break
        v4.close()
    else:
        raise AssertionError("no port free on both 127.0.0.1 and ::1 in 20 tries")

    def resolver(host: str, port: int) -> list[tuple[int, str]]:
        assert host == "app.test"
        return [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]

    result = Prober(resolver=resolver).probe(
        EndpointConfig(address=f"app.test:{v4.port}", server_name="localhost", ca_file=ca_file)
    )
    leaves = {a.address: a.chain[0].fingerprint_sha256 for a in result.addresses}
    assert leaves == {"127.0.0.1": fresh.fingerprint, "::1": stale.fingerprint}


def test_a_stalled_resolver_costs_its_timeout_not_the_lookup(
    tls_server: type[TLSServer], pki: PKI, root: Issued
) -> None:
    """getaddrinfo can't be interrupted: the probe must not wait for a lookup that outlives its deadline."""
    good = tls_server("127.0.0.1", context=server_context((pki.leaf(root),)))
    release, answered_late = threading.Event(), threading.Event()

    def resolver(host: str, port: int) -> list[tuple[int, str]]:
        if host == "stalled.test":
            release.wait(30)  # a resolver that hangs far past the endpoint's timeout
            answered_late.set()
        return [(socket.AF_INET, "127.0.0.1")]

    configs = [
        EndpointConfig(address=f"stalled.test:{good.port}", timeout=1.0),
        EndpointConfig(address=good.address, timeout=1.0),
    ]
    try:
        stalled, answered = Prober(resolver=resolver).probe_all(configs, concurrency=4)
        # The scan ended while the lookup was still stuck (it is released only below): it did not wait for it.
        assert not answered_late.is_set()
    finally:
        release.set()
    assert stalled.error is EndpointReason.DNS_FAILURE
    assert answered.addresses[0].up


def _free6(port: int) -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", port))
    except OSError:
        return False
    return True


def test_stalled_endpoints_cost_one_timeout_not_their_sum(tls_server: type[TLSServer], pki: PKI, root: Issued) -> None:
    good = tls_server("127.0.0.1", context=server_context((pki.leaf(root),)))
    stalled = tls_server("127.0.0.1", mode="stall")
    # Only the stalls must time out: a good handshake gets a timeout no busy machine reaches (64 at once against one
    # Python server, under load, took over 1 s), a stall 1 s.
    configs = [
        EndpointConfig(address=stalled.address, timeout=1.0)
        if i % 10 == 0
        else EndpointConfig(address=good.address, timeout=60.0)
        for i in range(200)
    ]
    results = Prober().probe_all(configs, concurrency=64)
    reasons = [r.addresses[0].error for r in results]
    assert reasons.count(EndpointReason.STALLED) == 20 and reasons.count(None) == 180
    # The stall server saw the stalls overlap: in series, each probe hangs up before the next one connects.
    assert stalled.held == 20 and stalled.peak > 1, f"at most {stalled.peak} stalled connection(s) open at once"


class _StartTLSServer:
    """A scripted plain-text preamble, then a real TLS handshake on the same connection."""

    SCRIPTS: ClassVar[dict[str, list[tuple[bytes | None, bytes]]]] = {
        "smtp": [(None, b"220 mx ESMTP\r\n"), (b"EHLO", b"250-mx\r\n250 STARTTLS\r\n"), (b"STARTTLS", b"220 go\r\n")],
        "ftp": [(None, b"220-hello\r\n220 ftp\r\n"), (b"AUTH TLS", b"234 go\r\n")],
        "imap": [(None, b"* OK IMAP ready\r\n"), (b"a1 STARTTLS", b"a1 OK go\r\n")],
        "pop3": [(None, b"+OK pop ready\r\n"), (b"STLS", b"+OK go\r\n")],
        "postgres": [(b"\x00\x00\x00\x08\x04\xd2\x16\x2f", b"S")],
    }

    def __init__(self, protocol: str, context: ssl.SSLContext) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.protocol, self.context = protocol, context
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        conn.settimeout(5)
        for expect, reply in self.SCRIPTS[self.protocol]:
            if expect is not None:
                got = conn.recv(1024)
                assert got.startswith(expect), got
            conn.sendall(reply)
        with self.context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)


@pytest.mark.parametrize("protocol", ["smtp", "ftp", "imap", "pop3", "postgres"])
def test_starttls_protocols(protocol: str, pki: PKI, root: Issued, ca_file: str) -> None:
    leaf = pki.leaf(root)
    server = _StartTLSServer(protocol, server_context((leaf,)))
    config = {"address": f"127.0.0.1:{server.port}", "starttls": protocol, "ca_file": ca_file, "timeout": 3}
    result = Prober().probe(EndpointConfig.model_validate(config))  # protocol is a plain str: the model checks it
    address = result.addresses[0]
    assert address.verified and address.chain[0].fingerprint_sha256 == leaf.fingerprint
    server.sock.close()


def test_starttls_refused_has_its_reason() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def refuse() -> None:
            conn, _ = listener.accept()
            conn.sendall(b"554 no service here\r\n")
            conn.close()

        threading.Thread(target=refuse, daemon=True).start()
        port = listener.getsockname()[1]
        result = Prober().probe(EndpointConfig(address=f"127.0.0.1:{port}", starttls="smtp", timeout=2))
    assert result.addresses[0].error is EndpointReason.STARTTLS_FAILED


def test_client_context_cache_stays_bounded_and_follows_a_changed_ca_file(
    tmp_path: Path, tls_server: type[TLSServer], pki: PKI, root: Issued
) -> None:
    server = tls_server("127.0.0.1", context=server_context((pki.leaf(root),)))
    other = pki.ca("Another Root")
    ca = tmp_path / "ca.pem"
    prober = Prober()
    config = EndpointConfig(address=server.address, ca_file=str(ca), timeout=5)
    for round_ in range(20):  # each write changes the file (and its mtime): the old context must go
        ca.write_bytes((root if round_ % 2 == 0 else other).cert_pem)
        os.utime(ca, ns=(round_ * 10**9, round_ * 10**9))
        result = prober.probe(config).addresses[0]
        assert result.verified is (round_ % 2 == 0), round_  # the context follows the file's content
        assert prober.cached_contexts == 1
    for i in range(MAX_CONTEXTS + 20):
        (tmp_path / f"ca{i}.pem").write_bytes(root.cert_pem)
        prober.probe(EndpointConfig(address=server.address, ca_file=str(tmp_path / f"ca{i}.pem"), timeout=5))
    assert prober.cached_contexts == MAX_CONTEXTS


def test_tls_info_has_the_version_even_when_verification_fails(
    tls_server: type[TLSServer], pki: PKI, root: Issued
) -> None:
    server = tls_server("127.0.0.1", context=server_context((pki.leaf(root),)))
    result = probe_one(server)  # the system trust store does not know the test root
    assert result.verify_error is VerifyReason.UNKNOWN_CA
    assert result.tls_version.startswith("TLSv1") and result.cipher


def test_a_fifo_as_ca_file_is_refused_without_blocking(tmp_path: Path, tls_server: type[TLSServer], pki: PKI) -> None:
    server = tls_server("127.0.0.1", context=server_context((pki.leaf(pki.ca()),)))
    os.mkfifo(tmp_path / "ca.pem")  # open() of a FIFO with no writer would block the probe for good
    result = Prober().probe(EndpointConfig(address=server.address, ca_file=str(tmp_path / "ca.pem"), timeout=5))
    assert result.addresses[0].error is EndpointReason.CA_FILE_UNAVAILABLE
    assert "not a regular file" in result.addresses[0].detail
