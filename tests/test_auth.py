"""web/auth.py: the Authorization header as aiohttp decodes it; anything malformed is the empty user."""

from __future__ import annotations

import base64

import bcrypt
import pytest

from gunicorn_cert_exporter.web.auth import credentials
from tests.support import RunningExporter, StartExporter


def _basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


def test_credentials_are_decoded_as_utf8_and_split_at_the_first_colon() -> None:
    assert credentials(_basic("prométheus:pa:ss".encode())) == ("prométheus", "pa:ss")
    assert credentials("basic " + base64.b64encode(b"prom:").decode()) == ("prom", "")


@pytest.mark.parametrize(
    "header",
    ["", "Basic", "Bearer cHJvbTpyaWdodA==", "Basic !!!", _basic(b"no colon"), _basic(b"\xff\xfe:right")],
)
def test_malformed_credentials_are_the_empty_user(header: str) -> None:
    """The empty user is unknown: it is checked against the dummy hash, at the cost of any unknown user."""
    assert credentials(header) == ("", "")


def test_malformed_credentials_are_refused_with_a_challenge(run_exporter: StartExporter) -> None:
    hashed = bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=4)).decode()
    exporter: RunningExporter = run_exporter("{}", users={"prom": hashed})
    for header in ("Basic !!!", _basic(b"prom"), _basic(b"\xff:right"), "Digest prom"):
        status, _ = exporter.get("/healthz", Authorization=header)
        assert status == 401
    assert exporter.get("/healthz", Authorization=_basic(b"prom:right")) == (200, b"ok\n")
