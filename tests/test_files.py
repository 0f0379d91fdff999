"""files.py: expansion, reasons for every hostile file, and re-parsing only what changed."""

from __future__ import annotations

import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from gunicorn_cert_exporter.config import FileSource
from gunicorn_cert_exporter.logs import LogfmtFormatter
from gunicorn_cert_exporter.model import FileReason, Parsed, PatternReason
from gunicorn_cert_exporter.safe_read import read_capped
from gunicorn_cert_exporter.sources import certs, globs
from gunicorn_cert_exporter.sources.files import FileScanner, Wanted
from tests.support import PKI, Issued, pkcs12_of, scan_paths
from tests.support.waiting import finishes


def test_hostile_files_each_get_their_reason_and_never_stop_the_scan(tmp_path: Path, root: Issued) -> None:
    good = tmp_path / "good.pem"
    good.write_bytes(root.cert_pem)
    (tmp_path / "empty.pem").write_bytes(b"")
    (tmp_path / "corrupt.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    (tmp_path / "big.pem").write_bytes(root.cert_pem + b"#" * 5000)
    os.mkfifo(tmp_path / "fifo.pem")
    (tmp_path / "loop.pem").symlink_to(tmp_path / "loop.pem")
    (tmp_path / "zero.pem").symlink_to("/dev/zero")
    (tmp_path / "dangling.pem").symlink_to(tmp_path / "gone")
    found = scan_paths(tmp_path / "*.pem", tmp_path / "missing.pem", max_size=4096)
    assert found == {
        str(tmp_path / "big.pem"): (FileReason.TOO_LARGE, 0),
        str(tmp_path / "corrupt.pem"): (FileReason.PARSE_ERROR, 0),
        str(tmp_path / "dangling.pem"): (FileReason.NOT_FOUND, 0),
        str(tmp_path / "empty.pem"): (FileReason.EMPTY, 0),
        str(tmp_path / "fifo.pem"): (FileReason.NOT_REGULAR_FILE, 0),
        str(tmp_path / "good.pem"): (None, 1),
        str(tmp_path / "loop.pem"): (FileReason.SYMLINK_LOOP, 0),
        str(tmp_path / "zero.pem"): (FileReason.NOT_REGULAR_FILE, 0),
        str(tmp_path / "missing.pem"): (FileReason.NOT_FOUND, 0),
    }


def test_a_parser_that_raises_is_logged_with_its_traceback(
    tmp_path: Path, root: Issued, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Hostile bytes that make a parser raise: a parse_error, and a log line saying where it raised."""

    def exploding_parser(*args: object, **kwargs: object) -> None:
        raise ValueError("unexpected tag")

    monkeypatch.setattr(certs, "parse", exploding_parser)
    (tmp_path / "x.pem").write_bytes(root.cert_pem)
    with caplog.at_level("WARNING", logger="gunicorn_cert_exporter"):
        result = FileScanner(clock=time.time, max_size=1 << 20).scan_one(Wanted(str(tmp_path / "x.pem")))
    assert result.error is FileReason.PARSE_ERROR
    [record] = [r for r in caplog.records if r.getMessage() == "parser raised on hostile input"]
    line = LogfmtFormatter().format(record)
    # The frame where it raised, not only the exception's class:
    assert 'exc="ValueError: unexpected tag"' in line and "in exploding_parser" in line


@pytest.mark.integration
def test_unreadable_file_is_permission_denied_for_an_unprivileged_scanner(root: Issued) -> None:
    directory = Path(tempfile.mkdtemp(prefix="gce-perm-"))
    try:
        directory.chmod(0o755)
        secret = directory / "secret.pem"
        secret.write_bytes(root.cert_pem)
        secret.chmod(0)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child drops to nobody, as an exporter without rights to the file would run
            try:
                if os.getuid() == 0:
                    os.setgid(65534)
                    os.setuid(65534)
                result = FileScanner(clock=time.time, max_size=1 << 20).scan_one(Wanted(str(secret)))
                os.write(write_fd, (result.error.value if result.error else "none").encode())
            finally:
                os._exit(0)
        os.close(write_fd)
        os.waitpid(pid, 0)
        assert os.read(read_fd, 100).decode() == "permission_denied"
        os.close(read_fd)
    finally:
        (directory / "secret.pem").unlink()
        directory.rmdir()


def test_unchanged_files_are_not_parsed_again(
    tmp_path: Path, root: Issued, pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.pem"
    path.write_bytes(root.cert_pem)
    calls: list[str] = []
    real_parse = certs.parse

    def counting_parse(data: bytes, **kwargs: Any) -> Parsed:
        calls.append(str(kwargs.get("name")))
        return real_parse(data, **kwargs)

    monkeypatch.setattr(certs, "parse", counting_parse)
    scanner = FileScanner(clock=time.time, max_size=1 << 20)
    first = scanner.scan([Wanted(str(path))])
    second = scanner.scan([Wanted(str(path))])
    assert len(calls) == 1 and first == second
    path.write_bytes(pki.leaf(root).cert_pem)
    third = scanner.scan([Wanted(str(path))])
    assert len(calls) == 2 and third[0].certs != first[0].certs


def test_changed_timestamp_moves_only_when_content_changes(tmp_path: Path, root: Issued, pki: PKI) -> None:
    path = tmp_path / "c.pem"
    path.write_bytes(root.cert_pem)
    os.utime(path, (1_700_000_000, 1_700_000_000))  # an old mtime kept by the copy (cp -p, rsync -a, tar)
    now = [2_000_000_000.0]
    scanner = FileScanner(clock=lambda: now[0], max_size=1 << 20)
    first_sight = os.stat(path).st_ctime  # when it was put in place: later than the kept mtime
    assert first_sight > 1_700_000_000
    assert scanner.scan([Wanted(str(path))])[0].changed_at == first_sight  # first sight: the later of the two
    os.utime(path, (1_800_000_000, 1_800_000_000))  # touched, same content
    assert scanner.scan([Wanted(str(path))])[0].changed_at == first_sight
    path.write_bytes(pki.leaf(root).cert_pem)
    now[0] = 2_000_000_100.0
    assert scanner.scan([Wanted(str(path))])[0].changed_at == 2_000_000_100.0


def test_a_future_mtime_is_first_seen_now_not_in_the_future(tmp_path: Path, root: Issued) -> None:
    """Clock skew or NFS: an mtime ahead of now would read as "changed after every worker started" forever."""
    path = tmp_path / "c.pem"
    path.write_bytes(root.cert_pem)
    os.utime(path, (2_000_003_600, 2_000_003_600))
    scanner = FileScanner(clock=lambda: 2_000_000_000.0, max_size=1 << 20)
    assert scanner.scan([Wanted(str(path))])[0].changed_at == 2_000_000_000.0


def test_kubernetes_data_symlink_swap_is_a_change(tmp_path: Path, root: Issued, pki: PKI) -> None:
    volume = tmp_path / "secret"
    volume.mkdir()
    old, new = pki.leaf(root), pki.leaf(root)
    (volume / "..2026_01").mkdir()
    (volume / "..2026_01" / "tls.crt").write_bytes(old.cert_pem)
    (volume / "..data").symlink_to("..2026_01")
    (volume / "tls.crt").symlink_to("..data/tls.crt")
    scanner = FileScanner(clock=time.time, max_size=1 << 20)
    wanted, _ = globs.expand([FileSource(paths=[str(volume)])])
    assert [w.path for w in wanted] == [str(volume / "tls.crt")]  # ..data and ..<ts> are not reported
    before = scanner.scan(wanted)[0]
    # What the kubelet does: write a new timestamped dir, then rename a new ..data link over the old one.
    (volume / "..2026_02").mkdir()
    (volume / "..2026_02" / "tls.crt").write_bytes(new.cert_pem)
    (volume / "..data_tmp").symlink_to("..2026_02")
    os.replace(volume / "..data_tmp", volume / "..data")
    after = scanner.scan(wanted)[0]
    assert before.certs[0].fingerprint_sha256 == old.fingerprint
    assert after.certs[0].fingerprint_sha256 == new.fingerprint


def test_pkcs12_passwords_come_from_file_or_env(
    tmp_path: Path, root: Issued, pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:

    leaf = pki.leaf(root)
    p12 = tmp_path / "app.p12"
    p12.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"app", leaf.key, leaf.cert, None, serialization.BestAvailableEncryption(b"hunter2")
        )
    )
    password_file = tmp_path / "pw"
    password_file.write_text("hunter2\n")
    assert scan_paths(p12, password_file=str(password_file))[str(p12)] == (None, 1)
    monkeypatch.setenv("P12_PW", "hunter2")
    assert scan_paths(p12, password_env="P12_PW")[str(p12)] == (None, 1)
    assert scan_paths(p12, password_env="NOT_SET_ANYWHERE")[str(p12)] == (FileReason.PASSWORD_UNAVAILABLE, 0)
    password_file.write_text("wrong")
    assert scan_paths(p12, password_file=str(password_file))[str(p12)] == (FileReason.BAD_PASSWORD, 0)


def test_file_swapped_for_a_fifo_after_stat_does_not_block(tmp_path: Path) -> None:
    path = tmp_path / "f.pem"
    os.mkfifo(path)
    # The open() a racing swap would reach: a blocking open of a FIFO with no writer never returns.
    data, info = finishes(lambda: read_capped(str(path), 1 << 20), "read_capped of a FIFO")
    assert data == b"" and stat.S_ISFIFO(info.st_mode)


def test_password_file_uses_its_first_line_only(tmp_path: Path, pki: PKI, root: Issued) -> None:
    (tmp_path / "a.p12").write_bytes(pkcs12_of(pki.leaf(root), b"right"))
    for text in (b"right\nnotes: rotated by vault\n", b"right\r\nsecond line\r\n", b"right"):
        (tmp_path / "pw").write_bytes(text)
        found = scan_paths(tmp_path / "a.p12", password_file=str(tmp_path / "pw"))
        assert found == {str(tmp_path / "a.p12"): (None, 1)}


def test_past_the_deadline_the_walk_stops_and_unread_files_keep_what_was_known(tmp_path: Path, root: Issued) -> None:
    for i in range(3):
        (tmp_path / f"{i}.pem").write_bytes(root.cert_pem)
    now = [0.0]
    finder = globs.Finder(clock=lambda: now[0])
    wanted, patterns = finder.expand([FileSource(paths=[f"{tmp_path}/*.pem"])], deadline=10.0)
    assert len(wanted) == 3 and patterns[0].problems == ()
    now[0] = 11.0
    _, late = finder.expand([FileSource(paths=[f"{tmp_path}/*.pem"])], deadline=10.0)
    assert [p.reason for p in late[0].problems] == [PatternReason.SCAN_DEADLINE]

    reads: list[str] = []

    def counting(path: str, max_size: int) -> tuple[bytes, os.stat_result]:
        reads.append(path)
        return read_capped(path, max_size)

    scanner = FileScanner(clock=time.time, max_size=1 << 20, reader=counting)
    first = scanner.scan(wanted)
    ticks = iter([0.0, 0.0, 20.0])
    second = scanner.scan(wanted, deadline=10.0, clock=lambda: next(ticks))
    assert [r.error for r in second] == [None, None, FileReason.SCAN_DEADLINE]
    assert second[2].certs == first[2].certs  # its series stay while it waits for a scan with time for it
    reads.clear()
    third = scanner.scan(wanted)
    assert [r.error for r in third] == [None, None, None] and third[2] == first[2]
    assert reads == []  # unchanged since it was last read: not read again (re-reading all would overrun again)
    ticks = iter([0.0, 0.0, 20.0])
    scanner.scan(wanted, deadline=10.0, clock=lambda: next(ticks))
    os.utime(wanted[2].path, ns=(0, 0))  # changed while it waited: read again, not trusted as unchanged
    assert [r.error for r in scanner.scan(wanted)] == [None, None, None] and reads == [wanted[2].path]


def test_the_run_after_an_abandoned_one_starts_from_what_it_found(tmp_path: Path, root: Issued, pki: PKI) -> None:
    """A scan abandoned at its deadline hands on what it parsed: a cold restart would overrun again, forever."""
    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.pem"
        path.write_bytes(pki.leaf(root).cert_pem)
        paths.append(str(path))
    reads: list[str] = []

    def counting(path: str, max_size: int) -> tuple[bytes, os.stat_result]:
        reads.append(path)
        return read_capped(path, max_size)

    scanner = FileScanner(clock=time.time, max_size=1 << 20, reader=counting)
    done = scanner.scan([Wanted(p) for p in paths[:2]])  # what the stuck run got through before its deadline
    reads.clear()
    following = scanner.successor()
    results = following.scan([Wanted(p) for p in paths])
    assert reads == [paths[2]]  # only the file the abandoned run never reached is read
    assert results[:2] == done and all(r.up for r in results)
