"""web/negotiation.py: the exposition format and gzip, chosen by the client's q-values."""

from __future__ import annotations

import pytest

from gunicorn_cert_exporter.web.negotiation import format_for, gzip_wanted

PROMETHEUS_3 = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
TEXT = "text/plain; version=0.0.4; charset=utf-8"


@pytest.mark.parametrize(
    ("header", "wanted"),
    [
        ("", False),
        ("gzip", True),
        ("GZIP;Q=0.1", True),
        ("deflate, gzip;q=0.5", True),
        ("gzip;q=0", False),
        ("gzip;q=0.0, *", False),  # gzip refused by name: the wildcard does not bring it back
        ("*;q=0.3", True),
        ("identity, *;q=0", False),
        ("gzip;q=nonsense", False),
        ("gzip;q=nan", False),
        ("br", False),
    ],
)
def test_gzip_honours_q_values(header: str, wanted: bool) -> None:
    assert gzip_wanted(header) is wanted


@pytest.mark.parametrize(
    ("header", "fmt", "content_type"),
    [
        ("", "text", TEXT),
        ("application/json", "text", TEXT),
        ("application/openmetrics-text;version=1.0.0", "openmetrics", "application/openmetrics-text; version=1.0.0;"),
        ("application/openmetrics-text;version=1.0.0;q=0", "text", TEXT),
        ("application/openmetrics-text;version=1.0.0;q=0.5, text/plain;version=0.0.4", "text", TEXT),
        ("text/plain;q=0.2, application/openmetrics-text;version=1.0.0;q=0.9", "openmetrics", "application/openm"),
        ("application/openmetrics-text;version=0.0.1, */*", "text", TEXT),  # a version it can't serve: passed over
        (PROMETHEUS_3, "openmetrics", "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping="),
    ],
)
def test_the_format_is_the_clients_most_wanted_one_that_is_served(header: str, fmt: str, content_type: str) -> None:
    chosen, chosen_type = format_for(header)
    assert (chosen, chosen_type[: len(content_type)]) == (fmt, content_type)
