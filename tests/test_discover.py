"""Found Gunicorn masters to targets: names, endpoints, the configured target winning, forget_after."""

from __future__ import annotations

import dataclasses
import ipaddress
import json

from gunicorn_cert_exporter import check as nagios
from gunicorn_cert_exporter import status
from gunicorn_cert_exporter.bands import Severity
from gunicorn_cert_exporter.config import GunicornTarget, ReloadConfig
from gunicorn_cert_exporter.metrics.collector import kind_families
from gunicorn_cert_exporter.model import (
    DiscoveryError,
    DiscoveryReport,
    EndpointResult,
    FileResult,
    MasterState,
    ScanStats,
    Snapshot,
    TargetSource,
    TargetState,
)
from gunicorn_cert_exporter.sources.discovery import FoundMaster
from gunicorn_cert_exporter.sources.gunicorn_conf import Settings
from gunicorn_cert_exporter.sources.gunicorn_settings import Learned, Problem
from gunicorn_cert_exporter.sources.listeners import Listener
from gunicorn_cert_exporter.targets.discover import Discovered, Discovery
from gunicorn_cert_exporter.vocabulary import ScanKind
from gunicorn_cert_exporter.web import status_page


def _master(
    pid: int, *ports: int, host: str = "127.0.0.1", name: str | None = None, cert: str | None = "/c.pem"
) -> FoundMaster:
    settings = Settings(certfile=cert, keyfile="/k.pem" if cert else None, proc_name=name)
    listeners = tuple(Listener(address=ipaddress.ip_address(host), port=p, inode=p) for p in ports)
    return FoundMaster(pid=pid, start_time=1000.0 + pid, listeners=listeners, learned=Learned(settings=settings))


def _names(path: str) -> str | None:
    return "api.example.com" if path == "/c.pem" else None


def _update(
    discovery: Discovery, *found: FoundMaster, now: float = 0.0, configured: tuple[GunicornTarget, ...] = ()
) -> Discovered:
    return discovery.update(found, configured=configured, now=now, server_name=_names)


def test_a_tls_master_becomes_a_target_named_by_proc_name_or_its_lowest_port() -> None:
    discovered = _update(Discovery(forget_after=3600), _master(10, 9443, 8443), _master(20, 7443, name="api"))
    by_name = {t.name: t for t in discovered.targets}
    assert set(by_name) == {"gunicorn-8443", "api"}
    target = by_name["gunicorn-8443"]
    assert (target.endpoint, target.pid, target.cert_file, target.key_file) == (
        "127.0.0.1:8443",
        10,
        "/c.pem",
        "/k.pem",
    )
    assert target.server_name == "api.example.com"
    assert discovered.masters == 2


def test_wildcard_binds_are_probed_on_loopback() -> None:
    discovered = _update(Discovery(forget_after=60), _master(10, 8443, host="0.0.0.0"), _master(11, 9443, host="::"))
    assert sorted(t.endpoint for t in discovered.targets) == ["127.0.0.1:8443", "[::1]:9443"]


def test_a_plain_http_master_is_no_target() -> None:
    assert _update(Discovery(forget_after=60), _master(10, 8000, cert=None)).targets == ()


def test_a_taken_name_gets_its_port_appended() -> None:
    configured = GunicornTarget(name="api", cert_file="/x", key_file="/y", endpoint="127.0.0.1:1443", pid=5)
    discovered = _update(Discovery(forget_after=60), _master(10, 8443, name="api"), configured=(configured,))
    assert [t.name for t in discovered.targets] == ["api-8443"]


def test_a_configured_target_wins_over_discovery_for_its_master() -> None:
    configured = GunicornTarget(name="mine", cert_file="/x", key_file="/y", endpoint="127.0.0.1:8443", pid=5)
    discovered = _update(Discovery(forget_after=60), _master(10, 8443), configured=(configured,))
    assert discovered.targets == ()


def test_a_master_that_exited_stays_until_forget_after() -> None:
    discovery = Discovery(forget_after=60)
    _update(discovery, _master(10, 8443), now=0)
    assert [t.name for t in _update(discovery, now=59).targets] == ["gunicorn-8443"]
    assert _update(discovery, now=61).targets == ()


def test_an_unreadable_or_computed_master_is_an_error_not_a_target() -> None:
    computed = FoundMaster(
        pid=10,
        start_time=1.0,
        listeners=(Listener(address=ipaddress.ip_address("127.0.0.1"), port=8443, inode=1),),
        learned=Learned(settings=Settings(), problem=Problem.CONFIG_NOT_LITERAL, config_file="/srv/g.py", detail="x"),
    )
    denied = FoundMaster(pid=11, start_time=1.0, denied="can't read /proc/11")
    discovered = _update(Discovery(forget_after=60), computed, denied)
    assert discovered.targets == ()
    assert {(e.target, e.reason, e.file) for e in discovered.errors} == {
        ("gunicorn-8443", "config_not_literal", "/srv/g.py"),
        ("gunicorn-pid-11", "permission_denied", ""),
    }


def test_discovered_targets_take_the_discovery_reload_policy() -> None:
    policy = ReloadConfig(enabled=True, after=10.0)
    discovered = _update(Discovery(forget_after=60, reload=policy), _master(10, 8443))
    assert discovered.targets[0].reload == policy


def _state(name: str, source: TargetSource, worker_class: str = "") -> TargetState:
    return TargetState(
        name=name,
        cert=FileResult(path=f"/{name}/cert.pem"),
        key=FileResult(path=f"/{name}/key.pem"),
        endpoint=EndpointResult(endpoint="127.0.0.1:8443", server_name=""),
        master=MasterState(pid=10, start_time=1.0),
        source=source,
        worker_class=worker_class,
    )


def _report() -> DiscoveryReport:
    errors = (
        DiscoveryError("gunicorn-9443", "config_not_literal", "/srv/gunicorn.conf.py computes certfile", "/srv/x"),
        DiscoveryError("gunicorn-9444", "cmdline_hidden", "setproctitle wrote its title"),
    )
    return DiscoveryReport(enabled=True, masters=4, errors=errors)


def test_discovered_targets_and_masters_that_cant_be_targets_show_in_series_page_api_and_check() -> None:
    snap = Snapshot(
        targets=(_state("api", "config"), _state("web", "discovery", "asgi")),
        discovery=_report(),
        scans=((ScanKind.GUNICORN, ScanStats(0.1, 1.0)),),
    )
    families = {f.name: f.samples for f in kind_families(ScanKind.GUNICORN, snap)}
    info = {s.labels["target"]: s.labels for s in families["gunicorn_cert_target_info"]}
    assert info["api"] == {"target": "api", "source": "config", "cert_file": "/api/cert.pem",
                           "key_file": "/api/key.pem", "worker_class": ""}  # fmt: skip
    assert (info["web"]["source"], info["web"]["worker_class"]) == ("discovery", "asgi")
    assert [s.value for s in families["gunicorn_cert_discovered_masters"]] == [4]
    errors = {(s.labels["target"], s.labels["reason"]) for s in families["gunicorn_cert_discovery_error"]}
    assert errors == {("gunicorn-9443", "config_not_literal"), ("gunicorn-9444", "cmdline_hidden")}

    view = status.build(snap, now=2.0)
    rows = {row.source: row for row in nagios.rows(view)}
    assert "gunicorn web (discovered)" in rows and "gunicorn api" in rows
    # A TLS master nobody watches is a WARNING; a Gunicorn whose settings can't be seen at all may serve no TLS.
    assert rows["gunicorn gunicorn-9443 (discovered)"].status is Severity.WARNING
    assert rows["gunicorn gunicorn-9444 (discovered)"].status is Severity.OK
    alone = Snapshot(discovery=_report(), scans=snap.scans)
    assert status.build(alone, now=2.0).status is Severity.WARNING  # the host's verdict counts it
    document = status.document(view)
    encoded = json.loads(json.dumps(document))
    assert [t["source"] for t in encoded["targets"]] == ["config", "discovery"]
    assert len(encoded["discovery_errors"]) == 2
    page = status_page.render(snap, now=2.0)
    assert "discovered · asgi" in page and "config_not_literal" in page and "cmdline_hidden" in page


def test_without_discovery_there_is_no_discovery_series() -> None:
    families = {f.name for f in kind_families(ScanKind.GUNICORN, Snapshot(targets=(_state("api", "config"),)))}
    assert "gunicorn_cert_target_info" in families
    assert not families & {"gunicorn_cert_discovered_masters", "gunicorn_cert_discovery_error"}


def test_a_config_reload_keeps_discovered_masters_under_the_new_reload_policy() -> None:
    old = Discovery(forget_after=60)
    _update(old, _master(10, 8443))
    new = Discovery(forget_after=60, reload=ReloadConfig(enabled=True))
    new.inherit(old)
    [target] = _update(new, now=30.0).targets  # the master is gone: remembered, not found again
    assert (target.name, target.reload.enabled) == ("gunicorn-8443", True)


def test_each_master_that_cant_be_a_target_has_its_own_name() -> None:
    """Two masters of another user (no sockets visible) or with one proc_name must not share a series."""
    denied = [FoundMaster(pid=pid, start_time=1.0, denied="another user's") for pid in (30, 31)]
    problem = Learned(settings=Settings(proc_name="api"), problem=Problem.CMDLINE_HIDDEN)
    hidden = [_master(pid, port) for pid, port in ((40, 8443), (41, 9443))]
    hidden = [dataclasses.replace(m, learned=problem) for m in hidden]
    errors = _update(Discovery(forget_after=60), *denied, *hidden).errors
    names = [e.target for e in errors]
    assert sorted(names) == ["api", "api-9443", "gunicorn-pid-30", "gunicorn-pid-31"]
