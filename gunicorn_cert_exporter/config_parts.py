"""The small sections of a config: scan timing, ACME/ARI, /probe's allow-list and the urgency bands (pydantic)."""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    field_validator,
    model_validator,
)

from gunicorn_cert_exporter.allow_patterns import AllowPattern, parse_allow_pattern
from gunicorn_cert_exporter.bands import Edge, Thresholds
from gunicorn_cert_exporter.config_values import Duration, Fraction, Timeout, parse_edge


class Frozen(BaseModel):
    """A config section: unknown keys are errors, and the value never changes once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class ScanConfig(Frozen):
    """How often and how widely scans run."""

    interval: Duration = 60.0
    jitter: Fraction = 0.1
    concurrency: int = Field(default=32, ge=1, le=1024)
    max_file_size: int = Field(default=1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    max_files: int = Field(default=100_000, ge=1, le=10_000_000)  # matched files, all patterns together
    max_depth: int = Field(default=32, ge=1, le=1000)  # directory levels below a glob's fixed prefix

    @field_validator("interval")
    @classmethod
    def _positive_interval(cls, value: float) -> float:
        if value < 1:
            raise ValueError("the scan interval must be at least 1s")
        return value

    @property
    def deadline(self) -> float:
        """Return how long one scan of any kind may run: 80% of the interval, so the next starts on time."""
        return self.interval * 0.8


def _acme_url(value: str) -> str:
    if not value.startswith(("https://", "http://")) or len(value) > 2048:
        raise ValueError("an ACME directory is an http:// or https:// URL")
    if "@" in value.split("/", 3)[2]:  # the URL is a label value and shown on the page: no user:password in it
        raise ValueError("an ACME directory URL carries no user or password")
    return value


class AcmeSource(Frozen):
    """The ACME CA a certificate comes from (without certbot): its directory URL, for ARI."""

    directory: Annotated[str, AfterValidator(_acme_url)]


class AriConfig(Frozen):
    """Ask the ACME server's renewal window (ARI, RFC 9773): at most once per certificate per interval."""

    enabled: bool = False
    interval: Duration = 6 * 3600.0
    timeout: Timeout = 10.0
    allow: list[str] = []  # hosts (globs) and IPs/CIDRs that may be private, loopback or link-local

    @field_validator("interval")
    @classmethod
    def _positive_interval(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("the ARI interval must be more than 0s")
        return value


class AcmeConfig(Frozen):
    """ACME: where certbot keeps its lineages, and ARI."""

    certbot_config_dir: str | None = "/etc/letsencrypt"
    ari: AriConfig = AriConfig()


class ProbeConfig(Frozen):
    """What ``/probe?target=`` may reach: ``host-glob:port`` or ``cidr:port`` patterns, nothing else."""

    allow: list[str] = []
    timeout: Timeout = 5.0
    _patterns: tuple[AllowPattern, ...] = PrivateAttr(default=())

    @field_validator("allow")
    @classmethod
    def _valid_patterns(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            parse_allow_pattern(pattern)  # a bad pattern is a config error at load, with its key path
        return patterns

    @model_validator(mode="after")
    def _parsed(self) -> ProbeConfig:
        self._patterns = tuple(parse_allow_pattern(pattern) for pattern in self.allow)
        return self

    @property
    def patterns(self) -> tuple[AllowPattern, ...]:
        """Return ``allow`` as parsed at load: a request matches against these, it never parses a pattern."""
        return self._patterns


EdgeSpec = Annotated[Edge, PlainValidator(parse_edge)]


class BandsConfig(Frozen):
    """Where WARNING and CRITICAL begin: a duration, a share of each certificate's lifetime, or the smaller of both."""

    warning: EdgeSpec = Thresholds().warning
    critical: EdgeSpec = Thresholds().critical

    @model_validator(mode="after")
    def _critical_inside_warning(self) -> BandsConfig:
        warning, critical = self.warning, self.critical
        if (warning.cap is not None and critical.cap is not None and critical.cap > warning.cap) or (
            warning.share is not None and critical.share is not None and critical.share > warning.share
        ):
            raise ValueError(f"critical ({critical}) begins before warning ({warning})")
        return self

    @property
    def thresholds(self) -> Thresholds:
        """Return the bands as the status view uses them."""
        return Thresholds(warning=self.warning, critical=self.critical)
