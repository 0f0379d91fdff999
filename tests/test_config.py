"""config.py: validation names every problem by key path; durations; the default equals the example."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gunicorn_cert_exporter import config, config_values
from gunicorn_cert_exporter.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config.load(text)
    return caught.value.problems


def test_every_problem_is_reported_at_once_with_its_key_path() -> None:
    found = problems(
        """
scan: {interval: 5x, jitter: 200%, colour: blue}
files: [{paths: []}]
endpoints: [{address: "no-port"}, {address: "h:1", timeout: fast}]
gunicorn:
  - {name: api, cert_file: a, key_file: b, endpoint: "h:1", pid: 10, reload: {after: soon, enabled: maybe}}
"""
    )
    keys = [p.split(":")[0] for p in found]
    assert sorted(keys) == sorted(
        [
            "scan.interval",
            "scan.jitter",
            "scan.colour",
            "files[0].paths",
            "endpoints[0].address",
            "endpoints[1].timeout",
            "gunicorn[0].reload.after",
            "gunicorn[0].reload.enabled",
        ]
    )
    assert "scan.colour: unknown key" in found


def test_cross_field_rules() -> None:
    assert problems("gunicorn: [{name: a, cert_file: c, key_file: k, endpoint: 'h:1'}]") == [
        "gunicorn[0]: set control_socket, pidfile or pid"
    ]
    assert "client_cert and client_key go together" in problems("endpoints: [{address: 'h:1', client_cert: c.pem}]")[0]
    assert "not both" in problems("files: [{paths: [a], password_file: f, password_env: E}]")[0]
    dup = (
        "gunicorn: [{name: a, cert_file: c, key_file: k, endpoint: 'h:1', pid: 5}, "
        "{name: a, cert_file: c, key_file: k, endpoint: 'h:1', pid: 6}]"
    )
    assert "unique" in problems(dup)[0]
    assert "port" in problems("probe: {allow: ['*.example.com']}")[0]
    # An address or network that isn't one is refused at load, not silently never matched per request.
    assert "not an IP address or network" in problems("probe: {allow: ['10.0.0.0/33:443']}")[0]
    assert "not an IP address or network" in problems("probe: {allow: ['[::1/200]:443']}")[0]


def test_yaml_syntax_errors_name_the_line() -> None:
    assert "line 2, column 1" in problems("scan:\n\tinterval: 1\n")[0]
    assert problems("- a list") == ["config: the top level must be a mapping"]


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h", 3600), ("1.5d", 129600), ("250ms", 0.25), (42, 42)]
)
def test_durations(text: object, seconds: float) -> None:
    assert config_values.parse_duration(text) == seconds


def test_addresses_and_sni() -> None:
    assert config_values.split_host_port("[::1]:8443") == ("::1", 8443)
    assert config_values.split_host_port("example.com:443") == ("example.com", 443)
    for bad in ("::1:443", "host", "host:0", "host:70000", "user@host:443", "host/x:443", ":443"):
        with pytest.raises(ValueError):
            config_values.split_host_port(bad)
    assert config.load("endpoints: [{address: '10.0.0.1:443'}]").endpoints[0].sni is None
    assert config.load("endpoints: [{address: 'a.example:443'}]").endpoints[0].sni == "a.example"


@pytest.mark.parametrize(
    ("endpoint", "server_name", "sni"),
    [
        ("10.0.0.1:8443", None, None),
        ("[::1]:8443", None, None),
        ("api.example:8443", None, "api.example"),
        ("10.0.0.1:8443", "api.example", "api.example"),
    ],
)
def test_a_gunicorn_targets_sni_is_its_endpoints(endpoint: str, server_name: str | None, sni: str | None) -> None:
    """A target's series are named by the SNI its endpoint is probed with, even where no probe was made."""
    target = config.GunicornTarget(
        name="api", cert_file="/c.pem", key_file="/k.pem", endpoint=endpoint, server_name=server_name, pid=2
    )
    assert target.sni == target.as_endpoint().sni == sni


def test_config_is_frozen() -> None:
    loaded = config.load("scan: {interval: 30s}")
    with pytest.raises(Exception):  # noqa: B017  (pydantic raises its own ValidationError)
        loaded.scan.interval = 5


def test_embedded_default_is_the_example_file_and_is_valid() -> None:
    assert config.default_text() == (ROOT / "config.example.yaml").read_text()
    loaded = config.load(config.default_text())
    assert loaded.files and not loaded.gunicorn  # the placeholder target is a commented example now
    assert loaded.discovery.gunicorn and loaded.discovery.reload.enabled is False
    assert all(source.optional for source in loaded.files if not source.trust_store)  # example globs: no warning


def test_discovery_is_off_unless_configured_and_check_never_reloads() -> None:
    assert config.load("files: []").discovery.gunicorn is False  # an upgrade changes nothing silently
    loaded = config.load("discovery: {gunicorn: true, forget_after: 10m, reload: {enabled: true, after: 1m}}")
    assert (loaded.discovery.forget_after, loaded.discovery.reload.after) == (600.0, 60.0)
    assert config.without_reloads(loaded).discovery.reload.enabled is False
    with pytest.raises(ConfigError) as caught:
        config.load("discovery: {gunicorn: true, source: discovery}")
    assert caught.value.problems == ["discovery.source: unknown key"]


def test_web_config_problems_use_the_same_key_path_format(tmp_path: Path) -> None:
    """One formatter for every config problem: the web config's look like the main config's."""
    from gunicorn_cert_exporter.web import webconfig

    path = tmp_path / "web.yml"
    path.write_text("tls_server_config: {cert_file: a, key_file: b, cert_fil: c}\nbasic_auth_users: [x]\n")
    with pytest.raises(ConfigError) as caught:
        webconfig.load(str(path))
    assert caught.value.problems == [
        f"{path}: tls_server_config.cert_fil: unknown key",
        f"{path}: basic_auth_users: Input should be a valid dictionary",
    ]


def test_relative_paths_resolve_against_the_config_files_directory(tmp_path: Path) -> None:
    """As Prometheus does: the working directory of the exporter does not matter; absolute paths stay."""
    path = tmp_path / "conf" / "exporter.yaml"
    path.parent.mkdir()
    path.write_text(
        """
files: [{paths: ["certs/*.pem", "/etc/ssl/x.pem"], password_file: pw}]
endpoints: [{address: "h:1", ca_file: ca.pem, client_cert: c.pem, client_key: c.key}]
gunicorn:
  - {name: api, cert_file: tls/cert.pem, key_file: /abs/key.pem, ca_file: ca.pem, endpoint: "h:1", pidfile: app.pid}
"""
    )
    loaded = config.load_file(str(path))
    base = str(path.parent)
    assert loaded.files[0].paths == [f"{base}/certs/*.pem", "/etc/ssl/x.pem"]
    assert loaded.files[0].password_file == f"{base}/pw"
    endpoint = loaded.endpoints[0]
    assert (endpoint.ca_file, endpoint.client_cert, endpoint.client_key) == (
        f"{base}/ca.pem",
        f"{base}/c.pem",
        f"{base}/c.key",
    )
    target = loaded.gunicorn[0]
    assert (target.cert_file, target.key_file, target.ca_file, target.pidfile) == (
        f"{base}/tls/cert.pem",
        "/abs/key.pem",
        f"{base}/ca.pem",
        f"{base}/app.pid",
    )
    # The embedded default config has no file: its relative paths stay relative to the working directory.
    assert (
        config.load("gunicorn: [{name: a, cert_file: c, key_file: k, endpoint: 'h:1', pid: 5}]").gunicorn[0].cert_file
        == "c"
    )


def test_listen_port_names_gunicorns_own_port_behind_a_pass_through() -> None:
    base = "gunicorn: [{name: a, cert_file: c, key_file: k, endpoint: '127.0.0.1:443', pid: 5"
    assert config.load(base + "}]").gunicorn[0].binding() == ("127.0.0.1", 443)
    assert config.load(base + ", listen_port: 8443}]").gunicorn[0].binding() == (None, 8443)
    named = "gunicorn: [{name: a, cert_file: c, key_file: k, endpoint: 'api.example:443', pid: 5}]"
    assert config.load(named).gunicorn[0].binding() == (None, 443)


def test_a_target_needs_a_control_socket_a_pidfile_or_a_pid() -> None:
    base = "gunicorn: [{name: a, cert_file: c, key_file: k, endpoint: 'h:1'"
    assert config.load(base + ", control_socket: /run/g.ctl}]").gunicorn[0].control_socket == "/run/g.ctl"
    assert config.load(base + ", control_socket: g.ctl, pidfile: g.pid}]").gunicorn[0].pidfile == "g.pid"
    assert any("control_socket, pidfile or pid" in p for p in problems(base + "}]"))
    assert any("not both" in p for p in problems(base + ", pidfile: p, pid: 5}]"))


def test_a_config_file_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """A config reload reads the file on the reload path: a FIFO (or a device) must be a problem, not a hang."""
    from gunicorn_cert_exporter.web import webconfig

    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    for load in (config.load_file, webconfig.load):
        with pytest.raises(ConfigError) as caught:
            load(str(fifo))
        assert caught.value.problems == [f"{fifo}: not a regular file"]
    huge = tmp_path / "huge.yaml"
    with open(huge, "wb") as handle:
        handle.truncate(64 << 20)
    with pytest.raises(ConfigError, match="larger than"):
        config.load_file(str(huge))


def test_a_timeout_of_zero_is_a_config_problem_everywhere_a_timeout_is_set() -> None:
    """A zero timeout once passed for a Gunicorn target and then crashed the exporter at start with a traceback."""
    found = problems(
        """
endpoints: [{address: "h:1", timeout: 0s}]
gunicorn: [{name: api, cert_file: a, key_file: b, endpoint: "h:1", pid: 10, timeout: 0s}]
probe: {allow: ["h:1"], timeout: 0}
"""
    )
    assert sorted(found) == [
        "endpoints[0].timeout: timeout must be more than 0s",
        "gunicorn[0].timeout: timeout must be more than 0s",
        "probe.timeout: timeout must be more than 0s",
    ]


@pytest.mark.parametrize(("value", "why"), [(".inf", "finite"), (".nan", "finite"), ("99999999999w", "at most 365d")])
def test_a_duration_is_finite_and_at_most_a_year_wherever_it_is_set(value: str, why: str) -> None:
    """`.inf` and `.nan` are YAML floats; an endless timeout once overflowed inside a scan and failed all endpoints."""
    found = problems(
        f"""
scan: {{interval: {value}}}
endpoints: [{{address: "h:1", timeout: {value}}}]
gunicorn: [{{name: api, cert_file: a, key_file: b, endpoint: "h:1", pid: 10, reload: {{after: {value}}}}}]
"""
    )
    assert sorted(p.split(":")[0] for p in found) == [
        "endpoints[0].timeout",
        "gunicorn[0].reload.after",
        "scan.interval",
    ]
    assert all(why in p for p in found)


_TARGET = 'gunicorn: [{name: a, cert_file: /a, key_file: /b, endpoint: "127.0.0.1:1", pid: 5, reload: %s}]'


@pytest.mark.parametrize(
    ("reload", "problem"),
    [
        ('{window: {between: "25:00-03:00", timezone: UTC}}', "gunicorn[0].reload.window: between '25:00-03:00'"),
        ('{window: {between: "02:00-03:00", timezone: Mars/Base}}', "'Mars/Base' is not an IANA time zone"),
        ('{window: {between: "02:00-03:00", timezone: UTC, days: [mon, xyz]}}', "gunicorn[0].reload.window.days[1]"),
        ('{window: {between: "02:00-03:00", timezone: UTC, days: []}}', "days lists at least one day"),
        ("{window: {between: 02:00-03:00}}", "gunicorn[0].reload.window.timezone: Field required"),
        ("{health: {path: healthz}}", "gunicorn[0].reload.health.path: path starts with /"),
        ('{health: {path: /healthz, expect: "700"}}', "gunicorn[0].reload.health.expect: expect '700' must lie"),
        ("{urgent_before: -1h}", "gunicorn[0].reload.urgent_before"),
        ("{windows: {}}", "gunicorn[0].reload.windows"),
    ],
)
def test_the_runbook_reload_settings_are_refused_with_their_key_path(reload: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(_TARGET % reload)
    assert problem in str(caught.value)


def test_a_window_and_a_health_path_load_as_written() -> None:
    text = '{window: {days: [sat, sun], between: "22:00-02:00", timezone: Europe/Berlin}, health: {path: /h}}'
    rules = config.load(_TARGET % text).gunicorn[0].reload
    assert rules.window is not None and rules.window.window().days == frozenset({5, 6})
    assert rules.health is not None and str(rules.health.expected()) == "200-399"
    assert rules.urgent_before == 72 * 3600.0


def test_revocation_is_off_by_default_and_reads_sizes() -> None:
    defaults = config.load("{}").revocation
    assert (defaults.enabled, defaults.methods, defaults.interval, defaults.timeout) == (
        False,
        ["crl", "ocsp"],
        3600.0,
        10.0,
    )
    assert defaults.max_crl_size == 20 * 1024 * 1024 and defaults.allow == []
    assert config.load("revocation: {max_crl_size: 512KiB}").revocation.max_crl_size == 512 * 1024
    for bad in ("revocation: {max_crl_size: lots}", "revocation: {methods: [carrier_pigeon]}", "revocation: {x: 1}"):
        with pytest.raises(config.ConfigError):
            config.load(bad)
