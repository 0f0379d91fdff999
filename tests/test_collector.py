"""collector.py: series from the snapshot, nothing else; they leave with their source; labels stay valid."""

from __future__ import annotations

import dataclasses

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gunicorn_cert_exporter import status
from gunicorn_cert_exporter.bands import Severity, Thresholds
from gunicorn_cert_exporter.metrics.catalogue import CATALOGUE
from gunicorn_cert_exporter.metrics.collector import SnapshotCollector
from gunicorn_cert_exporter.model import (
    AddressResult,
    EndpointReason,
    EndpointResult,
    FileReason,
    FileResult,
    MasterReason,
    MasterState,
    ScanStats,
    Snapshot,
    TargetState,
    VerifyReason,
    down_at,
)
from gunicorn_cert_exporter.scanning.coverage import coverage
from gunicorn_cert_exporter.scanning.store import Store
from gunicorn_cert_exporter.sources import certs
from gunicorn_cert_exporter.sources.probe_process import overdue
from tests.support import PKI, Issued


def registry_for(store: Store) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(SnapshotCollector(lambda: store.snapshot))
    return registry


def test_file_series_per_certificate_and_error_series(root: Issued, intermediate: Issued) -> None:
    store = Store()
    parsed = certs.parse(intermediate.cert_pem + root.cert_pem)
    store.update(
        files=(
            FileResult(path="/b.pem", certs=parsed.certs, changed_at=123.0),
            FileResult(path="/gone.pem", error=FileReason.NOT_FOUND),
        )
    )
    registry = registry_for(store)
    get = registry.get_sample_value
    assert (
        get("gunicorn_cert_file_not_after_timestamp_seconds", {"path": "/b.pem", "index": "1", "entry": ""})
        == root.cert.not_valid_after_utc.timestamp()
    )
    assert get("gunicorn_cert_file_up", {"path": "/b.pem"}) == 1
    assert get("gunicorn_cert_file_certificates", {"path": "/b.pem"}) == 2
    assert get("gunicorn_cert_file_changed_timestamp_seconds", {"path": "/b.pem"}) == 123.0
    assert get("gunicorn_cert_file_up", {"path": "/gone.pem"}) == 0
    assert get("gunicorn_cert_file_error", {"path": "/gone.pem", "reason": "not_found"}) == 1
    info = {
        "path": "/b.pem",
        "index": "0",
        "entry": "",
        "fingerprint_sha256": intermediate.fingerprint,
        "serial": format(intermediate.cert.serial_number, "x"),
        "subject_cn": "Test Intermediate CA",
        "issuer_cn": "Test Root CA",
        "key_type": "ecdsa",
        "key_bits": "256",
        "signature_algorithm": "ecdsa-with-SHA256",
        "is_ca": "true",
        "self_signed": "false",
    }
    assert get("gunicorn_cert_file_info", info) == 1


def test_sources_that_leave_the_snapshot_leave_the_output(root: Issued) -> None:
    store = Store()
    store.update(files=(FileResult(path="/a.pem", certs=certs.parse(root.cert_pem).certs),))
    registry = registry_for(store)
    assert registry.get_sample_value("gunicorn_cert_file_up", {"path": "/a.pem"}) == 1
    store.update(files=())
    assert registry.get_sample_value("gunicorn_cert_file_up", {"path": "/a.pem"}) is None


def test_endpoint_series_exist_whatever_verification_says(pki: PKI, root: Issued) -> None:
    chain = certs.parse(pki.leaf(root).cert_pem + root.cert_pem).certs
    store = Store()
    store.update(
        endpoints=(
            EndpointResult(
                endpoint="h:443",
                server_name="h",
                addresses=(
                    AddressResult(
                        address="127.0.0.1",
                        chain=chain,
                        verify_error=VerifyReason.EXPIRED,
                        tls_version="TLSv1.3",
                        cipher="TLS_AES_256_GCM_SHA384",
                        handshake_seconds=0.01,
                    ),
                    AddressResult(address="::1", error=EndpointReason.REFUSED),
                ),
            ),
            EndpointResult(endpoint="nx:443", server_name="nx", error=EndpointReason.DNS_FAILURE),
        )
    )
    get = registry_for(store).get_sample_value
    where = {"endpoint": "h:443", "server_name": "h", "address": "127.0.0.1"}
    assert get("gunicorn_cert_endpoint_up", where) == 1
    assert get("gunicorn_cert_endpoint_verified", where) == 0
    assert get("gunicorn_cert_endpoint_verify_error", {**where, "reason": "expired"}) == 1
    assert get("gunicorn_cert_endpoint_not_after_timestamp_seconds", {**where, "index": "1"}) == chain[1].not_after
    assert get("gunicorn_cert_endpoint_error", {**where, "address": "::1", "reason": "refused"}) == 1
    assert (
        get(
            "gunicorn_cert_endpoint_error",
            {"endpoint": "nx:443", "server_name": "nx", "address": "", "reason": "dns_failure"},
        )
        == 1
    )


def _target(master: MasterState) -> TargetState:
    return TargetState(
        name="api",
        cert=FileResult(path="cert.pem"),
        key=FileResult(path="key.pem"),
        endpoint=EndpointResult(endpoint="127.0.0.1:8443", server_name=""),
        master=master,
    )


def test_a_master_restart_changes_the_pid_value_not_the_series() -> None:
    """SPEC §5, no unbounded label: master_info keeps one series per target; the pid is master_pid's value."""
    store = Store()
    registry = registry_for(store)

    def master_series(master: MasterState) -> dict[str, list[tuple[dict[str, str], float]]]:
        store.update(targets=(_target(master),))
        wanted = ("gunicorn_cert_master_info", "gunicorn_cert_master_pid")
        return {f.name: [(s.labels, s.value) for s in f.samples] for f in registry.collect() if f.name in wanted}

    first = master_series(MasterState(pid=4242, start_time=1000.0, channel="control_socket"))
    restarted = master_series(MasterState(pid=5353, start_time=2000.0, channel="control_socket"))
    assert first["gunicorn_cert_master_info"] == [({"target": "api", "channel": "control_socket"}, 1.0)]
    assert restarted["gunicorn_cert_master_info"] == first["gunicorn_cert_master_info"]
    assert first["gunicorn_cert_master_pid"] == [({"target": "api"}, 4242.0)]
    assert restarted["gunicorn_cert_master_pid"] == [({"target": "api"}, 5353.0)]
    down = master_series(MasterState(channel="control_socket", error=MasterReason.CONTROL_SOCKET_UNAVAILABLE))
    assert down == {  # SPEC §5: the series stay while the master can't be proven; 0 is no pid
        "gunicorn_cert_master_info": first["gunicorn_cert_master_info"],
        "gunicorn_cert_master_pid": [({"target": "api"}, 0.0)],
    }


def test_hostile_label_values_come_out_as_valid_exposition(pki: PKI, root: Issued) -> None:
    nasty = 'evil"}\nfake_metric 1 \\'
    leaf = pki.leaf(root, nasty)
    path = "/tmp/\udcff\udcfe-not-utf8\n.pem"  # what os.fsdecode gives for undecodable bytes
    store = Store()
    store.update(files=(FileResult(path=path, certs=certs.parse(leaf.cert_pem).certs),))
    text = generate_latest(registry_for(store)).decode("utf-8")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "fake_metric" not in families
    info = families["gunicorn_cert_file_info"].samples[0].labels
    assert info["subject_cn"] == nasty
    assert info["path"] == "/tmp/\\udcff\\udcfe-not-utf8\n.pem"


def test_describe_names_every_catalogue_family_without_collecting() -> None:
    calls: list[int] = []

    def snapshot() -> Snapshot:
        calls.append(1)
        return Snapshot()

    collector = SnapshotCollector(snapshot)
    names = [m.name for m in collector.describe()]
    assert names == [s.name for s in CATALOGUE] and calls == []


def test_an_endpoint_past_the_scan_deadline_is_down_with_its_last_certificates(pki: PKI, root: Issued) -> None:
    """Never the last `up 1` served as fresh; its certificates still count for expiry alerts and the page."""
    chain = certs.parse(pki.leaf(root).cert_pem).certs
    last = EndpointResult(
        endpoint="h:443", server_name="h", addresses=(AddressResult(address="127.0.0.1", chain=chain, verified=True),)
    )
    store = Store()
    store.update(endpoints=(overdue(("h:443", "h"), last), overdue(("new:443", "new"), None)))
    get = registry_for(store).get_sample_value
    where = {"endpoint": "h:443", "server_name": "h", "address": "127.0.0.1"}
    assert get("gunicorn_cert_endpoint_up", where) == 0
    assert get("gunicorn_cert_endpoint_error", {**where, "reason": "scan_deadline"}) == 1
    assert get("gunicorn_cert_endpoint_not_after_timestamp_seconds", {**where, "index": "0"}) == chain[0].not_after
    assert get("gunicorn_cert_endpoint_verified", where) is None  # nothing was verified this time
    never = {"endpoint": "new:443", "server_name": "new", "address": ""}
    assert get("gunicorn_cert_endpoint_error", {**never, "reason": "scan_deadline"}) == 1
    view = status.build(store.snapshot, now=chain[0].not_before + 1, thresholds=Thresholds())
    assert {row.severity for row in view.sources} == {Severity.UNKNOWN}


def test_scan_coverage_is_the_share_of_sources_with_a_result_of_the_scan() -> None:
    store = Store()
    fresh = EndpointResult(endpoint="a:443", server_name="a", addresses=(AddressResult(address="10.0.0.1"),))
    late = overdue(("b:443", "b"), None)
    endpoints = (fresh, late, late, late)
    store.record_endpoints(
        ScanStats(duration_seconds=1, finished_at=2, coverage=coverage(endpoints)), endpoints=endpoints
    )
    get = registry_for(store).get_sample_value
    assert get("gunicorn_cert_exporter_scan_coverage_ratio", {"kind": "endpoints"}) == 0.25
    assert coverage([FileResult(path="/x", error=FileReason.SCAN_DEADLINE), FileResult(path="/y")]) == 0.5
    assert coverage([]) == 1.0


def test_an_endpoint_not_probed_this_scan_keeps_its_address_count_a_name_that_fails_drops_to_0() -> None:
    """Issue 25, smaller item: during a probe-process scan_failed the endpoints keep their addresses (docs/metrics.md)
    and so does gunicorn_cert_endpoint_addresses; only a name that does not resolve now resolved to nothing."""
    addresses = down_at(("127.0.0.1", "::1"), EndpointReason.SCAN_FAILED, "the probe process ended before answering")
    failed = EndpointResult("a:443", "a", addresses=addresses, error=EndpointReason.SCAN_FAILED)
    dns = EndpointResult("b:443", "b", addresses=down_at(("10.0.0.1",), EndpointReason.DNS_FAILURE, ""))
    dns = dataclasses.replace(dns, error=EndpointReason.DNS_FAILURE)
    store = Store()
    store.update(endpoints=(failed, dns))
    get = registry_for(store).get_sample_value
    assert get("gunicorn_cert_endpoint_addresses", {"endpoint": "a:443", "server_name": "a"}) == 2
    assert get("gunicorn_cert_endpoint_addresses", {"endpoint": "b:443", "server_name": "b"}) == 0
