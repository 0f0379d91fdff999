"""metrics/exposition.py: every family of the catalogue, written as prometheus_client writes it, in both formats."""

from __future__ import annotations

import pytest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gunicorn_cert_exporter.metrics.catalogue import CATALOGUE
from gunicorn_cert_exporter.metrics.collector import empty_family
from gunicorn_cert_exporter.metrics.exposition import FORMATS, HEADERS, encode, sample_line
from gunicorn_cert_exporter.metrics.spec import Spec

_VALUES = ["plain", 'quote " and \\ backslash', "new\nline and \r return", "caf\u00e9 \\udcff", ""]


class _Family(Collector):
    def __init__(self, spec: Spec, rows: list[tuple[list[str], float]]) -> None:
        self.family = empty_family(spec)
        for labels, value in rows:
            self.family.add_metric(labels, value)

    def collect(self) -> list[GaugeMetricFamily | CounterMetricFamily]:
        return [self.family]


@pytest.mark.parametrize("spec", CATALOGUE, ids=lambda spec: spec.name)
def test_each_family_is_written_byte_for_byte_as_prometheus_client_writes_it(spec: Spec) -> None:
    rows = [
        ([_VALUES[(i + j) % len(_VALUES)] for j in range(len(spec.labels))], value)
        for i, value in enumerate([0.0, 1.0, 1e10, 123456789.0, -2.5, float("inf"), float("nan")])
    ]
    for fmt in FORMATS:
        ours = HEADERS[fmt][spec.name] + "".join(sample_line(spec.name, labels, v) for labels, v in rows).encode()
        assert ours == encode(fmt, _Family(spec, rows))
