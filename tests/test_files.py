"""files.py: expansion, reasons for every hostile file, and re-parsing only what changed."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from gunicorn_cert_exporter.config import FileSource
from gunicorn_cert_exporter.model import FileReason, PatternReason
from gunicorn_cert_exporter.sources import certs, files
from gunicorn_cert_exporter.sources.files import FileScanner, Wanted
from tests.support import PKI, Issued, as_nobody, deep_tree, remove_tree


def scan(*paths: Path | str, max_size: int = 1 << 20, **source: object) -> dict[str, tuple[FileReason | None, int]]:
    wanted, _ = files.expand([FileSource(paths=[str(p) for p in paths], **source)])  # type: ignore[arg-type]
    results = FileScanner(clock=time.time, max_size=max_size).scan(wanted)
    return {r.path: (r.error, len(r.certs)) for r in results}


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
    found = scan(tmp_path / "*.pem", tmp_path / "missing.pem", max_size=4096)
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


def test_globs_directories_and_excludes(tmp_path: Path, root: Issued) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for rel in ("top.pem", "a/one.pem", "a/b/two.pem", "a/b/tls.key", "a/.hidden.pem"):
        (tmp_path / rel).write_bytes(root.cert_pem)
    deep = scan(tmp_path / "**" / "*.pem")
    assert sorted(Path(p).relative_to(tmp_path).as_posix() for p in deep) == ["a/b/two.pem", "a/one.pem", "top.pem"]
    directory = scan(tmp_path / "a", exclude=["**/*.key"])
    assert list(directory) == [str(tmp_path / "a" / "one.pem")]
    excluded = scan(tmp_path / "**", exclude=["**/*.key", "two.pem"])
    assert sorted(Path(p).name for p in excluded) == ["one.pem", "top.pem"]


def test_pattern_matches_are_counted(tmp_path: Path, root: Issued) -> None:
    (tmp_path / "x.pem").write_bytes(root.cert_pem)
    _, patterns = files.expand([FileSource(paths=[str(tmp_path / "*.pem"), str(tmp_path / "*.crt")])])
    assert [p.matches for p in patterns] == [1, 0]


def test_unchanged_files_are_not_parsed_again(
    tmp_path: Path, root: Issued, pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.pem"
    path.write_bytes(root.cert_pem)
    calls: list[str] = []
    real_parse = certs.parse

    def counting_parse(data: bytes, **kwargs: object) -> certs.Parsed:
        calls.append(str(kwargs.get("name")))
        return real_parse(data, **kwargs)  # type: ignore[arg-type]

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
    os.utime(path, (1_700_000_000, 1_700_000_000))
    now = [2_000_000_000.0]
    scanner = FileScanner(clock=lambda: now[0], max_size=1 << 20)
    assert scanner.scan([Wanted(str(path))])[0].changed_at == 1_700_000_000  # first sight: its mtime
    os.utime(path, (1_800_000_000, 1_800_000_000))  # touched, same content
    assert scanner.scan([Wanted(str(path))])[0].changed_at == 1_700_000_000
    path.write_bytes(pki.leaf(root).cert_pem)
    now[0] = 2_000_000_100.0
    assert scanner.scan([Wanted(str(path))])[0].changed_at == 2_000_000_100.0


def test_kubernetes_data_symlink_swap_is_a_change(tmp_path: Path, root: Issued, pki: PKI) -> None:
    volume = tmp_path / "secret"
    volume.mkdir()
    old, new = pki.leaf(root), pki.leaf(root)
    (volume / "..2026_01").mkdir()
    (volume / "..2026_01" / "tls.crt").write_bytes(old.cert_pem)
    (volume / "..data").symlink_to("..2026_01")
    (volume / "tls.crt").symlink_to("..data/tls.crt")
    scanner = FileScanner(clock=time.time, max_size=1 << 20)
    wanted, _ = files.expand([FileSource(paths=[str(volume)])])
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
    from cryptography.hazmat.primitives import serialization

    leaf = pki.leaf(root)
    p12 = tmp_path / "app.p12"
    p12.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"app", leaf.key, leaf.cert, None, serialization.BestAvailableEncryption(b"hunter2")
        )
    )
    password_file = tmp_path / "pw"
    password_file.write_text("hunter2\n")
    assert scan(p12, password_file=str(password_file))[str(p12)] == (None, 1)
    monkeypatch.setenv("P12_PW", "hunter2")
    assert scan(p12, password_env="P12_PW")[str(p12)] == (None, 1)
    assert scan(p12, password_env="NOT_SET_ANYWHERE")[str(p12)] == (FileReason.PASSWORD_UNAVAILABLE, 0)
    password_file.write_text("wrong")
    assert scan(p12, password_file=str(password_file))[str(p12)] == (FileReason.BAD_PASSWORD, 0)


def test_file_swapped_for_a_fifo_after_stat_does_not_block(tmp_path: Path) -> None:
    path = tmp_path / "f.pem"
    os.mkfifo(path)
    started = time.monotonic()
    data, info = files.read_capped(str(path), 1 << 20)  # the open() a racing swap would reach
    assert time.monotonic() - started < 1 and data == b"" and stat.S_ISFIFO(info.st_mode)


def _tree(base: Path, root: Issued) -> None:
    for rel in ("a.pem", "b.crt", "x/c.pem", "x/y/d.pem", "x/y/z/e.pem", "x/.hid.pem", ".hdir/f.pem", "w/g.pem"):
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(root.cert_pem)
    (base / "link").symlink_to(base / "x" / "y")


@pytest.mark.parametrize(
    "pattern", ["*.pem", "**/*.pem", "*/*.pem", "x/*/*.pem", "**", "x/**", "x/**/e.pem", "*/y/*.pem", "link/*.pem"]
)
def test_finder_matches_what_glob_finds(tmp_path: Path, root: Issued, pattern: str) -> None:
    """As glob.glob, except that ``**`` does not enter a symlinked directory (as find and pathlib in 3.13)."""
    import glob

    _tree(tmp_path, root)
    full = f"{tmp_path}/{pattern}"
    expected = sorted(p for p in glob.glob(full, recursive=True) if not os.path.isdir(p))
    if "**" in pattern:
        expected = [p for p in expected if not p.startswith(f"{tmp_path}/link/")]
    found, _ = files.Finder().expand([FileSource(paths=[full])])
    assert [w.path for w in found] == expected


def test_finder_lists_again_only_what_changed(tmp_path: Path, root: Issued) -> None:
    _tree(tmp_path, root)
    finder = files.Finder()
    source = [FileSource(paths=[f"{tmp_path}/**/*.pem"])]
    before = {w.path for w in finder.expand(source)[0]}
    (tmp_path / "x" / "y" / "new.pem").write_bytes(root.cert_pem)
    (tmp_path / "w" / "g.pem").unlink()
    after = {w.path for w in finder.expand(source)[0]}
    assert after - before == {f"{tmp_path}/x/y/new.pem"}
    assert before - after == {f"{tmp_path}/w/g.pem"}


def test_symlink_loops_in_a_recursive_glob_terminate(tmp_path: Path, root: Issued) -> None:
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "c.pem").write_bytes(root.cert_pem)
    (tmp_path / "d" / "e" / "up").symlink_to(tmp_path / "d")  # d/e/up -> d: a loop
    started = time.monotonic()
    found, _ = files.Finder().expand([FileSource(paths=[f"{tmp_path}/**/*.pem"])])
    assert time.monotonic() - started < 5
    assert f"{tmp_path}/d/e/c.pem" in [w.path for w in found]


def _p12(leaf: Issued, password: bytes) -> bytes:
    return pkcs12.serialize_key_and_certificates(
        b"x", leaf.key, leaf.cert, None, serialization.BestAvailableEncryption(password)
    )


def test_password_file_uses_its_first_line_only(tmp_path: Path, pki: PKI, root: Issued) -> None:
    (tmp_path / "a.p12").write_bytes(_p12(pki.leaf(root), b"right"))
    for text in (b"right\nnotes: rotated by vault\n", b"right\r\nsecond line\r\n", b"right"):
        (tmp_path / "pw").write_bytes(text)
        assert scan(tmp_path / "a.p12", password_file=str(tmp_path / "pw")) == {str(tmp_path / "a.p12"): (None, 1)}


def test_the_most_specific_source_gives_the_options_of_a_file_matched_twice(
    tmp_path: Path, pki: PKI, root: Issued
) -> None:
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "a.p12").write_bytes(_p12(pki.leaf(root), b"right"))
    (tmp_path / "right").write_text("right\n")
    (tmp_path / "wrong").write_text("wrong\n")
    broad = FileSource(paths=[f"{tmp_path}/**"], password_file=str(tmp_path / "wrong"))
    narrower = FileSource(paths=[f"{tmp_path}/tls/*.p12"], password_file=str(tmp_path / "right"))
    literal = FileSource(paths=[f"{tmp_path}/tls/a.p12"], password_file=str(tmp_path / "right"))
    broad_literal = FileSource(paths=[f"{tmp_path}/tls/*"], password_file=str(tmp_path / "wrong"))
    for sources in ([broad, narrower], [narrower, broad], [broad_literal, literal], [literal, broad_literal]):
        wanted, _ = files.expand(sources)
        results = FileScanner(clock=time.time, max_size=1 << 20).scan(wanted)
        assert [(r.path, r.error) for r in results if r.path.endswith(".p12")] == [(f"{tmp_path}/tls/a.p12", None)], (
            sources
        )


def test_double_star_matches_every_name_a_newline_too(tmp_path: Path, root: Issued) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("new\nline.pem", "tab\there.pem", "esc\x1b[31m.pem"):
        (tmp_path / "sub" / name).write_bytes(root.cert_pem)
    for pattern in ("**", "**/*.pem", "*/*.pem"):
        found, _ = files.expand([FileSource(paths=[f"{tmp_path}/{pattern}"])])
        assert sorted(w.path for w in found) == sorted(
            f"{tmp_path}/sub/{n}" for n in ("new\nline.pem", "tab\there.pem", "esc\x1b[31m.pem")
        ), pattern


def test_an_unreadable_directory_under_a_pattern_is_reported_on_that_pattern(root: Issued) -> None:
    base = Path(tempfile.mkdtemp(prefix="gce-dir-"))
    try:
        base.chmod(0o755)
        for sub in ("open", "closed"):
            (base / sub).mkdir()
            (base / sub / "c.pem").write_bytes(root.cert_pem)
        (base / "closed").chmod(0)

        def expand() -> str:
            found, patterns = files.expand([FileSource(paths=[f"{base}/**/*.pem"])])
            problems = [(p.reason.value, p.detail) for p in patterns[0].problems]
            return json.dumps({"found": [w.path for w in found], "problems": problems})

        seen = json.loads(as_nobody(expand))
        assert seen["found"] == [f"{base}/open/c.pem"]
        assert seen["problems"] == [["permission_denied", f"{base}/closed: Permission denied"]]
    finally:
        (base / "closed").chmod(0o755)
        shutil.rmtree(base)


def test_a_tree_deeper_than_max_depth_is_cut_with_a_reason_never_a_recursion_error(
    tmp_path: Path, root: Issued
) -> None:
    deep = tmp_path / "deep"
    deep_tree(deep, 1200, {4: root.cert_pem, 1200: root.cert_pem})
    (tmp_path / "other.pem").write_bytes(root.cert_pem)
    finder = files.Finder(max_depth=32)
    try:
        found, patterns = finder.expand([FileSource(paths=[f"{deep}/**/*.pem", f"{tmp_path}/other.pem"])])
    finally:
        remove_tree(deep)
    assert [w.path for w in found] == [f"{deep}{'/d' * 4}/c.pem", f"{tmp_path}/other.pem"]
    assert [p.reason for p in patterns[0].problems] == [PatternReason.MAX_DEPTH]
    assert patterns[1].problems == ()


def test_max_files_keeps_the_first_matches_and_never_starves_another_pattern(tmp_path: Path, root: Issued) -> None:
    (tmp_path / "many").mkdir()
    for i in range(500):
        (tmp_path / "many" / f"{i:03}.pem").write_bytes(b"x")
    (tmp_path / "small").mkdir()
    (tmp_path / "small" / "app.pem").write_bytes(root.cert_pem)
    sources = [FileSource(paths=[f"{tmp_path}/many/*.pem"]), FileSource(paths=[f"{tmp_path}/small/*.pem"])]
    found, patterns = files.Finder(max_files=100).expand(sources)
    assert len(found) == 100
    assert f"{tmp_path}/small/app.pem" in [w.path for w in found]
    assert f"{tmp_path}/many/000.pem" in [w.path for w in found]
    assert [p.reason for p in patterns[0].problems] == [PatternReason.MAX_FILES]
    assert (patterns[1].matches, patterns[1].problems) == (1, ())


def test_a_pattern_that_matches_nothing_says_so(tmp_path: Path) -> None:
    _, patterns = files.expand([FileSource(paths=[f"{tmp_path}/*.pem", f"{tmp_path}/missing/**"])])
    assert [(p.matches, [q.reason for q in p.problems]) for p in patterns] == [
        (0, [PatternReason.NO_MATCH]),
        (0, [PatternReason.NO_MATCH]),
    ]


def test_past_the_deadline_the_walk_stops_and_unread_files_keep_what_was_known(tmp_path: Path, root: Issued) -> None:
    for i in range(3):
        (tmp_path / f"{i}.pem").write_bytes(root.cert_pem)
    now = [0.0]
    finder = files.Finder(clock=lambda: now[0])
    wanted, patterns = finder.expand([FileSource(paths=[f"{tmp_path}/*.pem"])], deadline=10.0)
    assert len(wanted) == 3 and patterns[0].problems == ()
    now[0] = 11.0
    _, late = finder.expand([FileSource(paths=[f"{tmp_path}/*.pem"])], deadline=10.0)
    assert [p.reason for p in late[0].problems] == [PatternReason.SCAN_DEADLINE]

    scanner = FileScanner(clock=time.time, max_size=1 << 20)
    first = scanner.scan(wanted)
    ticks = iter([0.0, 0.0, 20.0])
    second = scanner.scan(wanted, deadline=10.0, clock=lambda: next(ticks))
    assert [r.error for r in second] == [None, None, FileReason.SCAN_DEADLINE]
    assert second[2].certs == first[2].certs  # its series stay while it waits for a scan with time for it
    third = scanner.scan(wanted)
    assert [r.error for r in third] == [None, None, None]  # read again, not trusted as unchanged
