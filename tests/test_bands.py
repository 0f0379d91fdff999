"""bands.py: the urgency rule follows each certificate's own lifetime; trust stores never turn red."""

from __future__ import annotations

import dataclasses

import pytest

from gunicorn_cert_exporter import config, config_values
from gunicorn_cert_exporter.bands import DAY, Band, Edge, Thresholds, classify, renewal_point, share_left
from gunicorn_cert_exporter.model import CertFacts
from gunicorn_cert_exporter.sources import certs
from tests.support import NOW, PKI, Issued

HOUR = 3600.0
T = NOW.timestamp()


@pytest.fixture(scope="module")
def template(pki: PKI, root: Issued) -> CertFacts:
    """The facts of a real certificate; each case moves its validity dates."""
    return certs.parse(pki.leaf(root).cert_pem).certs[0]


def facts(template: CertFacts, *, lifetime: float, left: float) -> CertFacts:
    """A certificate valid ``lifetime`` seconds in all, with ``left`` of them left at T."""
    return dataclasses.replace(template, not_before=T + left - lifetime, not_after=T + left)


def band(template: CertFacts, *, lifetime: float, left: float, trust_store: bool = False) -> Band:
    cert = facts(template, lifetime=lifetime, left=left)
    return classify(cert, now=T, thresholds=Thresholds(), trust_store=trust_store)[0]


@pytest.mark.parametrize(
    ("lifetime", "warning", "critical"),
    [
        (160 * HOUR, 40 * HOUR, 20 * HOUR),  # Let's Encrypt's short-lived certificates
        (45 * DAY, 11.25 * DAY, 5.625 * DAY),
        (90 * DAY, 22.5 * DAY, 7 * DAY),
        (398 * DAY, 28 * DAY, 7 * DAY),
        (3650 * DAY, 28 * DAY, 7 * DAY),  # a 10-year root: the caps
    ],
)
def test_bands_begin_at_the_smaller_of_the_cap_and_the_share_of_the_lifetime(
    template: CertFacts, lifetime: float, warning: float, critical: float
) -> None:
    minute = 60.0
    assert band(template, lifetime=lifetime, left=warning + minute) is Band.OK
    assert band(template, lifetime=lifetime, left=warning - minute) is Band.WARNING
    assert band(template, lifetime=lifetime, left=critical + minute) is Band.WARNING
    assert band(template, lifetime=lifetime, left=critical - minute) is Band.CRITICAL
    assert band(template, lifetime=lifetime, left=-minute) is Band.EXPIRED


def test_the_issue_figures(template: CertFacts) -> None:
    """A 160-hour certificate issued an hour ago was CRITICAL its whole life under the fixed 7/28-day bands."""
    assert band(template, lifetime=160 * HOUR, left=159 * HOUR) is Band.OK
    assert band(template, lifetime=160 * HOUR, left=30 * HOUR) is Band.WARNING
    assert band(template, lifetime=160 * HOUR, left=15 * HOUR) is Band.CRITICAL
    assert band(template, lifetime=45 * DAY, left=25 * DAY) is Band.OK
    assert band(template, lifetime=45 * DAY, left=10 * DAY) is Band.WARNING
    assert band(template, lifetime=90 * DAY, left=25 * DAY) is Band.OK
    assert band(template, lifetime=90 * DAY, left=20 * DAY) is Band.WARNING
    assert band(template, lifetime=398 * DAY, left=27 * DAY) is Band.WARNING
    assert band(template, lifetime=398 * DAY, left=6 * DAY) is Band.CRITICAL


def test_a_trust_store_retires_expired_anchors_and_never_turns_red(template: CertFacts) -> None:
    ten_years = 3650 * DAY
    assert band(template, lifetime=ten_years, left=-DAY, trust_store=True) is Band.RETIRED
    assert band(template, lifetime=ten_years, left=3 * DAY, trust_store=True) is Band.OK
    assert band(template, lifetime=ten_years, left=20 * DAY, trust_store=True) is Band.OK
    not_yet = dataclasses.replace(template, not_before=T + DAY, not_after=T + ten_years)
    assert classify(not_yet, now=T, thresholds=Thresholds(), trust_store=True)[0] is Band.OK
    assert Band.RETIRED.severity.name == "OK"
    # The same certificates anywhere else keep full bands.
    assert band(template, lifetime=ten_years, left=-DAY) is Band.EXPIRED
    assert band(template, lifetime=ten_years, left=3 * DAY) is Band.CRITICAL
    assert classify(not_yet, now=T, thresholds=Thresholds())[0] is Band.CRITICAL


def test_a_fixed_edge_ignores_the_lifetime_and_a_share_ignores_the_cap(template: CertFacts) -> None:
    fixed = Thresholds(warning=Edge(cap=28 * DAY), critical=Edge(cap=7 * DAY))
    short = facts(template, lifetime=160 * HOUR, left=159 * HOUR)
    assert classify(short, now=T, thresholds=fixed)[0] is Band.CRITICAL  # the old bands: red all its life
    shares = Thresholds(warning=Edge(share=0.25), critical=Edge(share=0.125))
    year = facts(template, lifetime=398 * DAY, left=60 * DAY)
    assert classify(year, now=T, thresholds=Thresholds())[0] is Band.OK
    assert classify(year, now=T, thresholds=shares)[0] is Band.WARNING  # 60 < 99.5 days


def test_share_left_and_the_usual_renewal_point(template: CertFacts) -> None:
    cert = facts(template, lifetime=90 * DAY, left=20 * DAY)
    assert share_left(cert, now=T) == pytest.approx(20 / 90)
    assert renewal_point(not_before=0.0, not_after=90 * DAY) == pytest.approx(60 * DAY)  # a third left
    assert renewal_point(not_before=0.0, not_after=160 * HOUR) == pytest.approx(80 * HOUR)  # half, under 10 days


@pytest.mark.parametrize(
    ("text", "edge"),
    [
        ("28d", Edge(cap=28 * DAY)),
        ("25%", Edge(share=0.25)),
        ("28d, 25%", Edge(cap=28 * DAY, share=0.25)),
        ("12.5%,7d", Edge(cap=7 * DAY, share=0.125)),
        ("40h", Edge(cap=40 * HOUR)),
    ],
)
def test_an_edge_is_written_the_same_in_the_config_and_on_the_command_line(text: str, edge: Edge) -> None:
    assert config_values.parse_edge(text) == edge
    assert config_values.parse_edge(str(edge)) == edge


@pytest.mark.parametrize("text", ["0%", "0d", "150%", "28d, 7d", "25%, 10%", "soon", ""])
def test_a_bad_edge_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        config_values.parse_edge(text)


def test_the_config_sets_the_bands_and_refuses_critical_outside_warning() -> None:
    loaded = config.load("bands: {warning: 21d, critical: '10%, 3d'}\n")
    assert loaded.bands.thresholds == Thresholds(warning=Edge(cap=21 * DAY), critical=Edge(cap=3 * DAY, share=0.1))
    assert config.load("{}").bands.thresholds == Thresholds()
    with pytest.raises(config.ConfigError) as caught:
        config.load("bands: {warning: 7d, critical: 28d}\nfiles: [{paths: [a], trust_store: maybe}]\n")
    problems = caught.value.problems
    assert any(p.startswith("bands: critical (28d) begins before warning (7d)") for p in problems), problems
    assert any(p.startswith("files[0].trust_store:") for p in problems), problems
