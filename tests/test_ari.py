"""RFC 9773's wire format, the renewal advice, and certbot's renewal files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from gunicorn_cert_exporter import config
from gunicorn_cert_exporter.model import (
    AddressResult,
    EndpointResult,
    FileResult,
    MasterState,
    RenewalAdvice,
    Snapshot,
    TargetState,
)
from gunicorn_cert_exporter.renewal import DAY, advise
from gunicorn_cert_exporter.scanning.renewals import subjects
from gunicorn_cert_exporter.sources import certbot
from gunicorn_cert_exporter.sources.ari import cert_id, renewal_info_url, window
from gunicorn_cert_exporter.sources.certs import cert_facts
from tests.acme_support import acme_leaf, certbot_lineage
from tests.support import PKI


def test_cert_id_is_rfc_9773s_example() -> None:
    """RFC 9773 section 4.1: this AKI keyIdentifier and serial give ``aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE``."""
    aki = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
    assert cert_id(key_identifier=aki, serial=0x87654321) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


@pytest.mark.parametrize(("serial", "der"), [(0, "AA"), (0x7F, "fw"), (0x80, "AIA"), (0x0100, "AQA")])
def test_the_serial_is_its_der_integer_bytes(serial: int, der: str) -> None:
    assert cert_id(key_identifier=b"\x01", serial=serial) == f"AQ.{der}"


def test_the_directory_names_the_renewal_info_url() -> None:
    assert renewal_info_url(b'{"renewalInfo": "https://ca.test/ari"}') == "https://ca.test/ari"
    assert renewal_info_url(b'{"newNonce": "https://ca.test/nonce"}') is None
    assert renewal_info_url(b'{"renewalInfo": "file:///etc/passwd"}') is None
    assert renewal_info_url(b"[" * 100_000) is None


def test_a_window_parses_with_its_explanation() -> None:
    body = (
        b'{"suggestedWindow": {"start": "2026-01-02T04:00:00Z", "end": "2026-01-03T04:00:00Z"},'
        b' "explanationURL": "https://ca.test/incident/42"}'
    )
    parsed = window(body)
    assert parsed is not None
    assert parsed.end - parsed.start == DAY and parsed.explanation_url == "https://ca.test/incident/42"


@pytest.mark.parametrize(
    "body",
    [
        b'{"suggestedWindow": {"start": "2026-01-03T04:00:00Z", "end": "2026-01-02T04:00:00Z"}}',  # end before start
        b'{"suggestedWindow": {"start": "2026-01-02T04:00:00", "end": "2026-01-03T04:00:00"}}',  # no time zone
        b'{"suggestedWindow": "soon"}',
        b"not json",
    ],
)
def test_a_malformed_window_is_none(body: bytes) -> None:
    assert window(body) is None


def test_an_unusable_explanation_url_is_dropped() -> None:
    body = b'{"suggestedWindow": {"start": "2026-01-02T04:00:00Z", "end": "2026-01-03T04:00:00Z"},'
    parsed = window(body + b' "explanationURL": "javascript:alert(1)"}')
    assert parsed is not None and parsed.explanation_url == ""


NOW = 1_800_000_000.0
DAY_DT = dt.timedelta(days=1)


def _advice(*, lifetime_days: float, left_days: float, end_in_days: float, **kw: float | None) -> RenewalAdvice:
    not_after = NOW + left_days * DAY
    end = NOW + end_in_days * DAY
    latest = kw.pop("latest_end", None)
    advice, _ = advise(
        end=end,
        latest_end=latest if latest is not None else end,
        not_before=not_after - lifetime_days * DAY,
        not_after=not_after,
        renew_before=kw.get("renew_before"),
        now=NOW,
    )
    return advice


def test_a_window_that_ended_early_is_the_ca_asking() -> None:
    """A 90-day certificate with 81 days left whose window ended an hour ago: a mass revocation may follow."""
    assert _advice(lifetime_days=90, left_days=81, end_in_days=-1 / 24) is RenewalAdvice.REQUESTED


@pytest.mark.parametrize("share", [1 / 3 - 0.01, 1 / 3, 1 / 3 + 0.01])
def test_a_usual_window_that_ended_is_overdue(share: float) -> None:
    """27 days left of 90, the usual window (ending with a third of the lifetime left, give or take 1%) has ended."""
    assert _advice(lifetime_days=90, left_days=27, end_in_days=27 - 90 * share) is RenewalAdvice.OVERDUE


def test_a_window_ahead_is_ok() -> None:
    assert _advice(lifetime_days=90, left_days=60, end_in_days=32) is RenewalAdvice.OK


def test_a_window_moved_earlier_is_the_ca_asking() -> None:
    later = NOW + 32 * DAY
    assert _advice(lifetime_days=90, left_days=60, end_in_days=30, latest_end=later) is RenewalAdvice.REQUESTED


def test_a_lineages_renew_before_expiry_is_its_usual_point() -> None:
    """certbot renews this lineage 60 days before expiry: a window ending 61 days before is usual, not a request."""
    assert _advice(lifetime_days=90, left_days=62, end_in_days=1, renew_before=60 * DAY) is RenewalAdvice.OK
    assert _advice(lifetime_days=90, left_days=62, end_in_days=1) is RenewalAdvice.REQUESTED


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30 days", 30 * DAY), ("2 weeks", 14 * DAY), ("1 month 2 days", 32 * DAY), ("12h", 43200.0), ("soon", None)],
)
def test_renew_before_expiry_reads_certbots_intervals(text: str, seconds: float | None) -> None:
    assert certbot.interval(text) == seconds


def test_a_lineage_is_read_from_its_renewal_file(tmp_path: Path) -> None:
    """certbot itself writes the lineages; a renewal file without a server is no lineage."""
    pki = PKI()
    ca = pki.ca()
    leaf = pki.leaf(ca)
    cert = certbot_lineage(tmp_path, "example.com", leaf, ca, server="https://ca.test/dir", renew_before="30 days")
    certbot_lineage(tmp_path, "other.org", leaf, ca, server="https://ca.test/dir")
    (tmp_path / "renewal" / "broken.conf").write_text("cert = /nowhere\n")
    found = certbot.lineages(str(tmp_path))
    assert [lineage.name for lineage in found] == ["example.com", "other.org"]
    assert found[0].cert == str(cert) and found[0].server == "https://ca.test/dir"
    assert found[0].renew_before_expiry == 30 * DAY and found[1].renew_before_expiry is None


def test_no_renewal_directory_is_no_lineage(tmp_path: Path) -> None:
    assert certbot.lineages(str(tmp_path / "missing")) == ()


def test_a_targets_file_and_served_leaves_are_subjects(tmp_path: Path) -> None:
    """A Gunicorn target with ``acme.directory``: its cert_file's leaf and each leaf it serves, once each."""

    ca = PKI().ca()
    on_disk, served = (cert_facts(acme_leaf(ca, lifetime=90 * DAY_DT, left=n * DAY_DT).cert) for n in (80, 20))
    loaded = config.load(
        "acme: {certbot_config_dir: null, ari: {enabled: true}}\n"
        "gunicorn:\n"
        "  - {name: app, cert_file: /c.pem, key_file: /k.pem, endpoint: '127.0.0.1:8443', pid: 2,\n"
        "     acme: {directory: 'https://ca.test/dir'}}\n"
        "  - {name: other, cert_file: /o.pem, key_file: /ok.pem, endpoint: '127.0.0.1:9443', pid: 3}\n"
    )
    addresses = tuple(AddressResult(a, chain=(served,)) for a in ("127.0.0.1:8443", "[::1]:8443"))
    app = TargetState(
        "app",
        FileResult("/c.pem", certs=(on_disk,)),
        FileResult("/k.pem"),
        EndpointResult("127.0.0.1:8443", "", addresses),
        MasterState(),
    )
    other = TargetState(
        "other",
        FileResult("/o.pem", certs=(on_disk,)),
        FileResult("/ok.pem"),
        EndpointResult("127.0.0.1:9443", ""),
        MasterState(),
    )
    found = subjects(loaded, Snapshot(targets=(app, other)))
    assert sorted((s.kind, s.source, s.cert.fingerprint_sha256) for s in found) == sorted(
        [("target", "app", on_disk.fingerprint_sha256), ("target", "app", served.fingerprint_sha256)]
    )
    assert all(s.directory == "https://ca.test/dir" and s.key for s in found)


def test_the_acme_config_is_validated() -> None:
    loaded = config.load("acme: {ari: {enabled: true, interval: 5s, allow: ['127.0.0.1', '10.0.0.0/8']}}")
    assert loaded.acme.ari.interval == 5.0 and loaded.acme.certbot_config_dir == "/etc/letsencrypt"
    assert config.load("").acme.ari.enabled is False and config.load("").acme.ari.interval == 6 * 3600
    for text, problem in [
        ("acme: {ari: {enabled: true, bogus: 1}}", "acme.ari.bogus: unknown key"),
        ("acme: {ari: {interval: 0s}}", "acme.ari.interval: the ARI interval must be more than 0s"),
        ("files: [{paths: [/x], acme: {directory: 'ftp://ca.test/'}}]", "files[0].acme.directory: an ACME"),
        ("files: [{paths: [/x], acme: {directory: 'https://u:p@ca.test/d'}}]", "carries no user or password"),
        ("endpoints: [{address: 'a:443', acme: {}}]", "endpoints[0].acme.directory: Field required"),
    ]:
        with pytest.raises(config.ConfigError) as caught:
            config.load(text)
        assert any(problem in p for p in caught.value.problems), caught.value.problems
