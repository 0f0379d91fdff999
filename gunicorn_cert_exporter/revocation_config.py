"""The ``revocation:`` section: whether and how leaves are checked against their CRLs and OCSP responders."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from gunicorn_cert_exporter.config_values import Duration, Timeout

_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$")
_UNIT_BYTES = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "KB": 1000, "MB": 1000**2, "GB": 1000**3}


def parse_size(value: object) -> int:
    """Read a size: a number of bytes, or "20MiB", "512KiB", "1GB"."""
    if isinstance(value, bool):
        raise ValueError("a size is a number of bytes or e.g. 20MiB")  # noqa: TRY004  (pydantic wants ValueError)
    if isinstance(value, int):
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError("a size is a number of bytes or e.g. 20MiB")
    return int(match.group(1)) * _UNIT_BYTES[match.group(2) or "B"]


Size = Annotated[int, BeforeValidator(parse_size)]


class RevocationConfig(BaseModel):
    """Check each reported leaf's CRL Distribution Points and AIA OCSP responder, off the scans' path."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    enabled: bool = False
    methods: list[Literal["crl", "ocsp"]] = Field(default=["crl", "ocsp"], min_length=1)
    interval: Duration = 3600.0  # at most one fetch per URL (CRL) or leaf (OCSP) per interval
    timeout: Timeout = 10.0
    max_crl_size: Size = Field(default=20 * 1024 * 1024, ge=1024, le=1024**3)
    ocsp_hash: Literal["sha1", "sha256"] = "sha1"  # the CertID's hash: SHA-1 is what every responder reads
    allow: list[str] = []  # hosts (globs) and IPs/CIDRs that may be private, loopback or link-local

    @field_validator("interval")
    @classmethod
    def _positive_interval(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("the revocation interval must be more than 0s")
        return value
