"""YAML to a validated, frozen Config; ConfigError carries every problem with its key path."""

from __future__ import annotations

import os
import re
from importlib import resources
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gunicorn_cert_exporter.config_parts import (
    AcmeConfig,
    AcmeSource,
    BandsConfig,
    Frozen,
    ProbeConfig,
    ScanConfig,
)
from gunicorn_cert_exporter.config_runbook import HealthConfig, WindowConfig
from gunicorn_cert_exporter.config_values import (
    Duration,
    Timeout,
    parse_ip,
    split_host_port,
)
from gunicorn_cert_exporter.revocation_config import RevocationConfig
from gunicorn_cert_exporter.safe_read import read_regular

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class ConfigError(Exception):
    """A configuration that can't be used; ``problems`` lists each one with its key path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class FileSource(Frozen):
    """Certificate files: explicit paths, globs (``**`` recursive), directories, with excludes."""

    paths: list[str] = Field(min_length=1)
    exclude: list[str] = Field(default_factory=list)
    format: Literal["auto", "pem", "der", "pkcs12", "jks", "kubeconfig"] = "auto"
    optional: bool = False  # patterns that may match nothing (an example, a path on some hosts only): no no_match
    password_file: str | None = None
    password_env: str | None = None
    trust_store: bool = False  # anchors to trust, not certificates to renew: expired ones are retired, never red
    acme: AcmeSource | None = None
    ca_file: str | None = None  # an issuer of the CRLs these files hold, besides their own directory

    @model_validator(mode="after")
    def _one_password_source(self) -> FileSource:
        if self.password_file and self.password_env:
            raise ValueError("set password_file or password_env, not both")
        return self


def _check_address(value: str) -> str:
    split_host_port(value)
    return value


Address = Annotated[str, BeforeValidator(lambda v: v if not isinstance(v, str) else _check_address(v))]


def _sni(address: str, server_name: str | None) -> str | None:
    if server_name:
        return server_name
    host, _ = split_host_port(address)
    return None if parse_ip(host) is not None else host


class EndpointConfig(Frozen):
    """A live TLS endpoint, probed on every address its host resolves to."""

    address: Address
    server_name: str | None = None
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    timeout: Timeout = 5.0
    starttls: Literal["smtp", "imap", "pop3", "ftp", "postgres"] | None = None
    acme: AcmeSource | None = None

    @model_validator(mode="after")
    def _client_pair(self) -> EndpointConfig:
        if bool(self.client_cert) != bool(self.client_key):
            raise ValueError("client_cert and client_key go together")
        return self

    @property
    def sni(self) -> str | None:
        """Return the SNI to send: ``server_name``, else the host unless it is an IP literal."""
        return _sni(self.address, self.server_name)


class ReloadConfig(Frozen):
    """When the exporter may SIGHUP a Gunicorn master; off unless enabled."""

    enabled: bool = False
    after: Duration = 120.0
    cooldown: Duration = 900.0
    max_per_hour: int = Field(default=2, ge=1, le=60)
    verify_timeout: Duration = 30.0
    dry_run: bool = False
    window: WindowConfig | None = None  # outside it a due reload waits (config_runbook.py)
    urgent_before: Duration = 72 * 3600.0  # the served leaf expires sooner: the window is ignored
    health: HealthConfig | None = None  # a GET that must answer in range before a reload counts as confirmed


class GunicornTarget(Frozen):
    """One Gunicorn instance: its cert/key files, its TLS endpoint and its master."""

    name: str
    cert_file: str
    key_file: str
    endpoint: Address
    server_name: str | None = None
    ca_file: str | None = None
    timeout: Timeout = 5.0
    pidfile: str | None = None
    pid: int | None = Field(default=None, ge=2)
    control_socket: str | None = None  # Gunicorn 25.1+ --control-socket: prove, watch and reload through it
    listen_port: int | None = Field(default=None, ge=1, le=65535)  # Gunicorn's port behind a TCP pass-through
    reload: ReloadConfig = ReloadConfig()
    acme: AcmeSource | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("a name is 1-64 letters, digits, '_', '.', ':' or '-'")
        return value

    @model_validator(mode="after")
    def _one_pid_source(self) -> GunicornTarget:
        if self.pidfile is not None and self.pid is not None:
            raise ValueError("set pidfile or pid, not both")
        if (self.pidfile, self.pid, self.control_socket) == (None, None, None):  # targets/channel.py picks one
            raise ValueError("set control_socket, pidfile or pid")
        return self

    def binding(self) -> tuple[str | None, int]:
        """Return the IP literal (or None: any address) and the port the master must listen on."""
        host, port = split_host_port(self.endpoint)
        if self.listen_port is not None:
            return None, self.listen_port  # a pass-through's own address says nothing of Gunicorn's bind
        return (host if parse_ip(host) is not None else None), port

    @property
    def sni(self) -> str | None:
        """Return the SNI its endpoint is probed with, as ``as_endpoint().sni`` (without building the endpoint)."""
        return _sni(self.endpoint, self.server_name)

    def as_endpoint(self) -> EndpointConfig:
        """Return the endpoint this target serves, to be probed like any other."""
        return EndpointConfig(
            address=self.endpoint, server_name=self.server_name, ca_file=self.ca_file, timeout=self.timeout
        )


class DiscoveryConfig(Frozen):
    """Which processes on this host become Gunicorn targets by themselves (absent: none)."""

    gunicorn: bool = False
    forget_after: Duration = 3600.0  # a discovered master that exited stays listed (master_up 0) this long
    reload: ReloadConfig = ReloadConfig()  # the reload policy of every discovered target


class Config(Frozen):
    """The whole exporter configuration."""

    scan: ScanConfig = ScanConfig()
    bands: BandsConfig = BandsConfig()
    files: list[FileSource] = Field(default_factory=list)
    endpoints: list[EndpointConfig] = Field(default_factory=list)
    gunicorn: list[GunicornTarget] = Field(default_factory=list)
    discovery: DiscoveryConfig = DiscoveryConfig()
    probe: ProbeConfig = ProbeConfig()
    acme: AcmeConfig = AcmeConfig()
    revocation: RevocationConfig = RevocationConfig()

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, raw: Any) -> Any:  # noqa: ANN401  (raw YAML)
        # A section whose entries are all commented out is null in YAML: read it as empty.
        if isinstance(raw, dict):
            return {k: v for k, v in raw.items() if v is not None}
        return raw

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        names = [t.name for t in self.gunicorn]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"gunicorn target names must be unique: {', '.join(duplicates)}")
        return self


def load(text: str, *, source: str = "config", base: str | None = None) -> Config:
    """Parse and validate YAML text; raise ConfigError listing every problem.

    Relative paths in it resolve against ``base`` (the config file's directory), as Prometheus does; without a
    base (the embedded default config) they stay relative to the working directory.
    """
    try:
        raw: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([f"{source}: {problem}{where}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{source}: the top level must be a mapping"])
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc)) from None
    return config if base is None else anchored(config, base)


def _anchor(path: str | None, base: str) -> str | None:
    return None if path is None else os.path.join(base, path)  # join keeps an absolute path as it is


def without_reloads(config: Config) -> Config:
    """Return the config with every target's reload disabled: what a one-off scan (``check``) may do."""
    targets = [t.model_copy(update={"reload": t.reload.model_copy(update={"enabled": False})}) for t in config.gunicorn]
    discovery = config.discovery.model_copy(
        update={"reload": config.discovery.reload.model_copy(update={"enabled": False})}
    )
    return config.model_copy(update={"gunicorn": targets, "discovery": discovery})


def anchored(config: Config, base: str) -> Config:
    """Resolve every relative file path of a config (globs included) against ``base``."""
    files = [
        source.model_copy(
            update={
                "paths": [os.path.join(base, path) for path in source.paths],
                "password_file": _anchor(source.password_file, base),
                "ca_file": _anchor(source.ca_file, base),
            }
        )
        for source in config.files
    ]
    endpoints = [
        endpoint.model_copy(
            update={
                "ca_file": _anchor(endpoint.ca_file, base),
                "client_cert": _anchor(endpoint.client_cert, base),
                "client_key": _anchor(endpoint.client_key, base),
            }
        )
        for endpoint in config.endpoints
    ]
    targets = [
        target.model_copy(
            update={
                "cert_file": _anchor(target.cert_file, base),
                "key_file": _anchor(target.key_file, base),
                "ca_file": _anchor(target.ca_file, base),
                "pidfile": _anchor(target.pidfile, base),
                "control_socket": _anchor(target.control_socket, base),
            }
        )
        for target in config.gunicorn
    ]
    return config.model_copy(update={"files": files, "endpoints": endpoints, "gunicorn": targets})


_CONFIG_CAP = 4 * 1024 * 1024


def read_config_text(path: str) -> str:
    """Read a config file without ever blocking (a FIFO, a device) or reading without bound; ConfigError if not."""
    try:
        data = read_regular(path, _CONFIG_CAP + 1)
    except IsADirectoryError:
        raise ConfigError([f"{path}: not a regular file"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: {exc.strerror or exc}"]) from None
    if len(data) > _CONFIG_CAP:
        raise ConfigError([f"{path}: larger than {_CONFIG_CAP} bytes"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None


def load_file(path: str) -> Config:
    """Read and validate a config file."""
    return load(read_config_text(path), source=path, base=os.path.dirname(os.path.abspath(path)))


def default_text() -> str:
    """Return the embedded default configuration (the same text as config.example.yaml)."""
    return resources.files("gunicorn_cert_exporter").joinpath("default_config.yaml").read_text("utf-8")


def describe_errors(exc: ValidationError) -> list[str]:
    """Turn pydantic's errors into ``key.path[0].key: message`` lines, the one format of every config problem."""
    return [_describe(error) for error in exc.errors(include_url=False)]


def _describe(error: Any) -> str:  # noqa: ANN401  (pydantic's ErrorDetails is a TypedDict)
    path = ""
    for part in error["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        elif str(part).startswith(("function-", "json-or-python")):
            continue  # pydantic's internal validator names, not keys
        else:
            path += f".{part}" if path else str(part)
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    return f"{path or '(top level)'}: {message}"
