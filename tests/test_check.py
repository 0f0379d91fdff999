"""`check` as an SRE runs it when paged: problems first, counts per state, --problems, terminal-safe output."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from gunicorn_cert_exporter import check as nagios
from gunicorn_cert_exporter import status
from gunicorn_cert_exporter.bands import Severity
from gunicorn_cert_exporter.model import (
    AddressResult,
    EndpointReason,
    EndpointResult,
    FileReason,
    FileResult,
    ScanStats,
    Snapshot,
)
from gunicorn_cert_exporter.sources import certs
from gunicorn_cert_exporter.vocabulary import ScanKind
from tests.support import DAY, LIFETIMES, NOW, PKI, Issued, TLSServer, free_port, lifetime_files, server_context

EXPORTER = [sys.executable, "-m", "gunicorn_cert_exporter"]
RANK = {"CRITICAL": 3, "UNKNOWN": 2, "WARNING": 1, "OK": 0}


def check(tmp_path: Path, config: str, *args: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.yaml"
    path.write_text(config)
    command = [*EXPORTER, "check", "--config", str(path), *args]
    # Run in tmp_path, so relative paths in a config show whole (the table cuts cells at 60 characters).
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)


def table(stdout: str) -> tuple[list[list[str]], str]:
    """Split a table into its rows (split on runs of two spaces) and its summary line."""
    body, _, summary = stdout.rstrip("\n").rpartition("\n\n")
    rows = [[cell.strip() for cell in line.split("  ") if cell.strip()] for line in body.splitlines()[1:]]
    return rows, summary


def _trust_store(tmp_path: Path, pki: PKI) -> Path:
    """A bundle like the OS trust store: fine roots, one expired in the middle, a 10-year one expiring in 10 days."""
    certs = [pki.ca(f"Fine Root {i:02d}", not_after=NOW + (1000 + i) * DAY) for i in range(30)]
    certs[17] = pki.issue("Expired Root", ca=True, not_before=NOW - 900 * DAY, not_after=NOW - 564 * DAY)
    certs[5] = pki.issue("Soon Root", ca=True, not_before=NOW - 3640 * DAY, not_after=NOW + 10 * DAY)
    path = tmp_path / "ca-certificates.crt"
    path.write_bytes(b"".join(c.cert_pem for c in certs))
    return path


@pytest.mark.integration
def test_problems_first_then_soonest_with_counts_per_state(tmp_path: Path, pki: PKI) -> None:
    bundle = _trust_store(tmp_path, pki)
    config = f"files: [{{paths: ['{bundle}', '{tmp_path}/missing/*.crt']}}]\n"
    result = check(tmp_path, config)
    assert result.returncode == 2, result.stderr
    rows, summary = table(result.stdout)
    assert summary == "CRITICAL: 1 critical, 2 warning, 0 unknown, 28 ok"
    assert [r[0] for r in rows] == ["CRITICAL"] + ["WARNING"] * 2 + ["OK"] * 28
    assert rows[0][3] == "Expired Root" and rows[0][-1] == "expired"
    assert {rows[1][-1], rows[2][-1]} == {"expires soon", "pattern matches no file"}
    ok_dates = [r[4] for r in rows[3:]]
    assert ok_dates == sorted(ok_dates)  # then the soonest expiry first

    problems = check(tmp_path, config, "--problems")
    assert problems.returncode == 2
    problem_rows, problem_summary = table(problems.stdout)
    assert problem_rows == rows[:3] and "OK" not in [r[0] for r in problem_rows]
    assert problem_summary == summary  # the summary still counts every check

    document = json.loads(check(tmp_path, config, "--output", "json", "--problems").stdout)
    assert document["counts"] == {"critical": 1, "warning": 2, "unknown": 0, "ok": 28, "retired": 0}
    assert [c["status"] for c in document["checks"]] == ["CRITICAL", "WARNING", "WARNING"]


@pytest.mark.integration
def test_a_pattern_that_matches_nothing_warns_naming_it(short_tmp: Path, root: Issued) -> None:
    (short_tmp / "ca.pem").write_bytes(root.cert_pem)
    result = check(short_tmp, "files: [{paths: ['ca.pem', 'live/**/fullchain.pem']}]\n")
    assert result.returncode == 1
    rows, summary = table(result.stdout)
    # Relative patterns resolve against the config file's directory and are shown resolved.
    assert rows[0] == ["WARNING", f"{short_tmp}/live/**/fullchain.pem", "pattern matches no file"]
    assert summary == "WARNING: 0 critical, 1 warning, 0 unknown, 1 ok"


@pytest.mark.integration
def test_an_optional_pattern_that_matches_nothing_stays_ok(short_tmp: Path, root: Issued) -> None:
    """The embedded default's example globs are optional: a host without them is not yellow because of them."""
    (short_tmp / "ca.pem").write_bytes(root.cert_pem)
    result = check(short_tmp, "files: [{paths: ['ca.pem']}, {paths: ['live/**/fullchain.pem'], optional: true}]\n")
    assert result.returncode == 0, result.stdout
    assert table(result.stdout)[1] == "OK: 0 critical, 0 warning, 0 unknown, 1 ok"


@pytest.mark.integration
def test_an_unreadable_file_is_as_critical_as_an_unreachable_endpoint(tmp_path: Path) -> None:
    file = check(tmp_path, f"files: [{{paths: ['{tmp_path}/gone.pem']}}]\n")
    endpoint = check(tmp_path, f"endpoints: [{{address: '127.0.0.1:{free_port()}', timeout: 5s}}]\n")
    assert file.returncode == endpoint.returncode == 2
    (file_row,), _ = table(file.stdout)
    (endpoint_row,), _ = table(endpoint.stdout)
    assert file_row[0] == endpoint_row[0] == "CRITICAL"
    assert file_row[-1].startswith("not_found") and endpoint_row[-1].startswith("refused")


@pytest.mark.integration
def test_unknown_when_nothing_is_broken_but_a_fact_cannot_be_known(
    tmp_path: Path, pki: PKI, root: Issued, tls_server: type[TLSServer]
) -> None:
    leaf = pki.leaf(root)
    server = tls_server("127.0.0.1", context=server_context((leaf,)))
    (tmp_path / "root.pem").write_bytes(root.cert_pem)
    (tmp_path / "cert.pem").write_bytes(leaf.cert_pem)
    config = (
        f"gunicorn: [{{name: app, cert_file: {tmp_path}/cert.pem, key_file: {tmp_path}/root.pem, "
        f"ca_file: {tmp_path}/root.pem, endpoint: '{server.address}', server_name: localhost, pid: 999999}}]\n"
    )
    result = check(tmp_path, config)
    rows, summary = table(result.stdout)
    assert result.returncode == 3, result.stdout
    assert rows[0][:2] == ["UNKNOWN", "gunicorn app"]
    assert "key pairing unknown: key_file holds no private key" in rows[0][2]
    assert summary == "UNKNOWN: 0 critical, 0 warning, 1 unknown, 3 ok"


@pytest.mark.integration
def test_table_spells_out_control_characters_in_every_field(short_tmp: Path, pki: PKI, root: Issued) -> None:
    subject = "\x1b]0;pwned\x07\nINJECTED\x9b2J\x7f\u202eevil"
    (short_tmp / "name\x1b[2J\n.pem").write_bytes(pki.leaf(root, subject).cert_pem)
    result = check(short_tmp, "files: [{paths: ['*.pem']}]\n")
    assert result.returncode == 0, result.stdout
    for raw in ("\x1b", "\x07", "\x9b", "\x7f", "\u202e"):
        assert raw not in result.stdout
    rows, _ = table(result.stdout)
    assert len(rows) == 1  # the newlines did not start new rows
    assert rows[0][1] == f"{short_tmp}/name\\x1b[2J\\x0a.pem"
    assert rows[0][3] == "\\x1b]0;pwned\\x07\\x0aINJECTED\\x9b2J\\x7f\\u202eevil"
    document = json.loads(check(short_tmp, "files: [{paths: ['*.pem']}]\n", "--output", "json").stdout)
    assert document["checks"][0]["subject"] == subject  # JSON keeps the value, escaped by json.dumps


def _verdict_of(snapshot: Snapshot) -> Severity:
    view = status.build(dataclasses.replace(snapshot, scans=((ScanKind.FILES, ScanStats(0.1, NOW.timestamp())),)),
                        now=NOW.timestamp())  # fmt: skip
    return nagios.verdict(nagios.rows(view))


def test_a_source_the_exporter_did_not_look_at_is_unknown_unless_what_it_knew_is_worse(pki: PKI, root: Issued) -> None:
    """An endpoint whose scan failed or a file past the scan's deadline is no finding: UNKNOWN, not CRITICAL."""
    fine = certs.parse(pki.leaf(root, not_after=NOW + 90 * DAY).cert_pem).certs
    expired = certs.parse(pki.leaf(root, not_after=NOW - DAY).cert_pem).certs
    failed = EndpointResult(endpoint="a:443", server_name="a", error=EndpointReason.SCAN_FAILED)
    down = dataclasses.replace(failed, addresses=(AddressResult(address="10.0.0.1", error=EndpointReason.SCAN_FAILED),))
    assert _verdict_of(Snapshot(endpoints=(failed,))) == Severity.UNKNOWN
    assert _verdict_of(Snapshot(endpoints=(down,))) == Severity.UNKNOWN
    late = FileResult(path="/c.pem", certs=fine, error=FileReason.SCAN_DEADLINE)
    assert _verdict_of(Snapshot(files=(late,))) == Severity.UNKNOWN
    assert _verdict_of(Snapshot(files=(dataclasses.replace(late, certs=expired),))) == Severity.CRITICAL
    # A finding stays one: the exporter looked and could not read, or could not connect.
    assert _verdict_of(Snapshot(files=(FileResult(path="/c.pem", error=FileReason.NOT_FOUND),))) == Severity.CRITICAL
    refused = dataclasses.replace(down, addresses=(AddressResult(address="10.0.0.1", error=EndpointReason.REFUSED),))
    assert _verdict_of(Snapshot(endpoints=(refused,))) == Severity.CRITICAL


def states(stdout: str) -> dict[str, str]:
    """Map each certificate's subject to its state in `check --output json`."""
    return {c["subject"]: c["status"] for c in json.loads(stdout)["checks"] if c["subject"]}


@pytest.mark.integration
def test_default_bands_follow_each_certificates_lifetime(tmp_path: Path, pki: PKI, root: Issued) -> None:
    lifetime_files(tmp_path, pki, root)
    result = check(tmp_path, "files: [{paths: ['*.pem']}]\n", "--output", "json")
    assert result.returncode == 2, result.stderr
    assert states(result.stdout) == {name: state for name, (_, _, state) in LIFETIMES.items()}
    rows, _ = table(check(tmp_path, "files: [{paths: ['*.pem']}]\n").stdout)
    fresh = next(r for r in rows if r[3] == "160h-issued-an-hour-ago")
    assert fresh[5:8] == ["6.6", "6.7", "99%"]  # days left, lifetime in days, share of it left


@pytest.mark.integration
def test_fixed_or_share_bands_from_the_flags_and_the_config(tmp_path: Path, pki: PKI, root: Issued) -> None:
    lifetime_files(tmp_path, pki, root)
    config = "files: [{paths: ['*.pem']}]\n"
    fixed = states(check(tmp_path, config, "--output", "json", "--warning", "28d", "--critical", "7d").stdout)
    assert fixed["160h-issued-an-hour-ago"] == "CRITICAL" and fixed["45d-25-left"] == "WARNING"
    shares = states(check(tmp_path, config, "--output", "json", "--warning", "25%", "--critical", "12.5%").stdout)
    assert shares["160h-issued-an-hour-ago"] == "OK" and shares["398d-6-left"] == "CRITICAL"
    configured = states(check(tmp_path, "bands: {warning: 28d, critical: 7d}\n" + config, "--output", "json").stdout)
    assert configured == fixed
    refused = check(tmp_path, config, "--warning", "0%")
    assert refused.returncode == 2 and "a band's edge must be more than 0" in refused.stderr


@pytest.mark.integration
def test_a_trust_store_retires_expired_anchors_a_private_ca_bundle_does_not(tmp_path: Path, pki: PKI) -> None:
    bundle = _trust_store(tmp_path, pki)
    trusted = check(tmp_path, f"files: [{{paths: ['{bundle}'], trust_store: true}}]\n")
    assert trusted.returncode == 0, trusted.stdout
    rows, summary = table(trusted.stdout)
    assert summary == "OK: 0 critical, 0 warning, 0 unknown, 29 ok, 1 retired"
    expired = next(r for r in rows if r[3] == "Expired Root")
    assert expired[0] == "OK" and expired[-1] == "retired: expired trust anchor"
    assert next(r for r in rows if r[3] == "Soon Root")[0] == "OK"  # 10 days left of 10 years: no renewal to do
    document = json.loads(
        check(tmp_path, f"files: [{{paths: ['{bundle}'], trust_store: true}}]\n", "--output", "json").stdout
    )
    assert document["counts"] == {"critical": 0, "warning": 0, "unknown": 0, "ok": 29, "retired": 1}
    private = check(tmp_path, f"files: [{{paths: ['{bundle}']}}]\n")
    assert private.returncode == 2
    assert table(private.stdout)[1] == "CRITICAL: 1 critical, 1 warning, 0 unknown, 28 ok"


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive")  # one root of the OS bundle
def test_the_os_trust_store_is_ok_as_a_trust_store_and_critical_without_the_flag(tmp_path: Path) -> None:
    """The acceptance on this machine's bundle and its expired roots (Debian 12's 20230311: Baltimore CyberTrust
    Root and 4 more; a later ca-certificates may drop them, then only the trust-store half has something to show)."""
    os_bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    now = dt.datetime.now(dt.timezone.utc)
    expired = sum(1 for c in x509.load_pem_x509_certificates(os_bundle.read_bytes()) if c.not_valid_after_utc < now)
    trusted = check(tmp_path, f"files: [{{paths: ['{os_bundle}'], trust_store: true}}]\n", "--output", "json")
    assert trusted.returncode == 0
    assert json.loads(trusted.stdout)["counts"]["retired"] == expired
    plain = check(tmp_path, f"files: [{{paths: ['{os_bundle}']}}]\n", "--output", "json")
    assert json.loads(plain.stdout)["counts"]["critical"] >= expired
    if expired:
        assert plain.returncode == 2
