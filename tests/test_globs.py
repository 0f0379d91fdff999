"""globs.py: paths, globs and directories to files, bounded in count, depth and time; the most specific source wins."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path

import pytest

from gunicorn_cert_exporter.config import FileSource
from gunicorn_cert_exporter.model import PatternReason
from gunicorn_cert_exporter.sources import globs
from gunicorn_cert_exporter.sources.files import FileScanner
from gunicorn_cert_exporter.text import printable
from tests.support import PKI, Issued, as_nobody, deep_tree, pkcs12_of, remove_tree, scan_paths
from tests.support.waiting import finishes


def test_globs_directories_and_excludes(tmp_path: Path, root: Issued) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for rel in ("top.pem", "a/one.pem", "a/b/two.pem", "a/b/tls.key", "a/.hidden.pem"):
        (tmp_path / rel).write_bytes(root.cert_pem)
    deep = scan_paths(tmp_path / "**" / "*.pem")
    assert sorted(Path(p).relative_to(tmp_path).as_posix() for p in deep) == ["a/b/two.pem", "a/one.pem", "top.pem"]
    directory = scan_paths(tmp_path / "a", exclude=["**/*.key"])
    assert list(directory) == [str(tmp_path / "a" / "one.pem")]
    excluded = scan_paths(tmp_path / "**", exclude=["**/*.key", "two.pem"])
    assert sorted(Path(p).name for p in excluded) == ["one.pem", "top.pem"]


def test_pattern_matches_are_counted(tmp_path: Path, root: Issued) -> None:
    (tmp_path / "x.pem").write_bytes(root.cert_pem)
    _, patterns = globs.expand([FileSource(paths=[str(tmp_path / "*.pem"), str(tmp_path / "*.crt")])])
    assert [p.matches for p in patterns] == [1, 0]


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
    found, _ = globs.Finder().expand([FileSource(paths=[full])])
    assert [w.path for w in found] == expected


def test_finder_lists_again_only_what_changed(tmp_path: Path, root: Issued) -> None:
    _tree(tmp_path, root)
    finder = globs.Finder()
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
    found, _ = finishes(lambda: globs.Finder().expand([FileSource(paths=[f"{tmp_path}/**/*.pem"])]), "the walk")
    assert f"{tmp_path}/d/e/c.pem" in [w.path for w in found]


def test_the_most_specific_source_gives_the_options_of_a_file_matched_twice(
    tmp_path: Path, pki: PKI, root: Issued
) -> None:
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "a.p12").write_bytes(pkcs12_of(pki.leaf(root), b"right"))
    (tmp_path / "right").write_text("right\n")
    (tmp_path / "wrong").write_text("wrong\n")
    broad = FileSource(paths=[f"{tmp_path}/**"], password_file=str(tmp_path / "wrong"))
    narrower = FileSource(paths=[f"{tmp_path}/tls/*.p12"], password_file=str(tmp_path / "right"))
    literal = FileSource(paths=[f"{tmp_path}/tls/a.p12"], password_file=str(tmp_path / "right"))
    broad_literal = FileSource(paths=[f"{tmp_path}/tls/*"], password_file=str(tmp_path / "wrong"))
    for sources in ([broad, narrower], [narrower, broad], [broad_literal, literal], [literal, broad_literal]):
        wanted, _ = globs.expand(sources)
        results = FileScanner(clock=time.time, max_size=1 << 20).scan(wanted)
        assert [(r.path, r.error) for r in results if r.path.endswith(".p12")] == [(f"{tmp_path}/tls/a.p12", None)], (
            sources
        )


def test_double_star_matches_every_name_a_newline_too(tmp_path: Path, root: Issued) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("new\nline.pem", "tab\there.pem", "esc\x1b[31m.pem"):
        (tmp_path / "sub" / name).write_bytes(root.cert_pem)
    for pattern in ("**", "**/*.pem", "*/*.pem"):
        found, _ = globs.expand([FileSource(paths=[f"{tmp_path}/{pattern}"])])
        assert sorted(w.path for w in found) == sorted(
            f"{tmp_path}/sub/{n}" for n in ("new\nline.pem", "tab\there.pem", "esc\x1b[31m.pem")
        ), pattern


@pytest.mark.integration
def test_an_unreadable_directory_under_a_pattern_is_reported_on_that_pattern(root: Issued) -> None:
    base = Path(tempfile.mkdtemp(prefix="gce-dir-"))
    try:
        base.chmod(0o755)
        for sub in ("open", "closed"):
            (base / sub).mkdir()
            (base / sub / "c.pem").write_bytes(root.cert_pem)
        (base / "closed").chmod(0)

        def expand() -> str:
            found, patterns = globs.expand([FileSource(paths=[f"{base}/**/*.pem"])])
            problems = [(p.reason.value, p.detail) for p in patterns[0].problems]
            return json.dumps({"found": [w.path for w in found], "problems": problems})

        seen = json.loads(as_nobody(expand))
        assert seen["found"] == [f"{base}/open/c.pem"]
        assert seen["problems"] == [["permission_denied", f"{base}/closed: Permission denied"]]
    finally:
        (base / "closed").chmod(0o755)
        shutil.rmtree(base)


def test_a_glob_problem_spells_out_control_characters_as_the_page_and_check_do(tmp_path: Path) -> None:
    """One `printable` for every text: ESC spelled out, a printable non-ASCII name (café) left as it is."""
    deep = tmp_path / "café\x1b[2J" / "d"
    deep.mkdir(parents=True)
    (deep / "c.pem").write_bytes(b"x")
    _, patterns = globs.Finder(max_depth=1).expand([FileSource(paths=[f"{tmp_path}/**/*.pem"])])
    details = [p.detail for p in patterns[0].problems]
    assert details == [f"not entered below 1 levels: {tmp_path}/café\\x1b[2J/d"]
    assert details[0].endswith(printable(str(deep)))


def test_a_tree_deeper_than_max_depth_is_cut_with_a_reason_never_a_recursion_error(
    tmp_path: Path, root: Issued
) -> None:
    deep = tmp_path / "deep"
    deep_tree(deep, 1200, {4: root.cert_pem, 1200: root.cert_pem})
    (tmp_path / "other.pem").write_bytes(root.cert_pem)
    finder = globs.Finder(max_depth=32)
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
    found, patterns = globs.Finder(max_files=100).expand(sources)
    assert len(found) == 100
    assert f"{tmp_path}/small/app.pem" in [w.path for w in found]
    assert f"{tmp_path}/many/000.pem" in [w.path for w in found]
    assert [p.reason for p in patterns[0].problems] == [PatternReason.MAX_FILES]
    assert (patterns[1].matches, patterns[1].problems) == (1, ())


def test_a_pattern_that_matches_nothing_says_so(tmp_path: Path) -> None:
    _, patterns = globs.expand([FileSource(paths=[f"{tmp_path}/*.pem", f"{tmp_path}/missing/**"])])
    assert [(p.matches, [q.reason for q in p.problems]) for p in patterns] == [
        (0, [PatternReason.NO_MATCH]),
        (0, [PatternReason.NO_MATCH]),
    ]


@pytest.mark.integration
@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="a Linux /proc is what this test walks")
def test_proc_beside_a_normal_source_is_bounded_and_the_normal_source_is_found(root: Issued) -> None:
    """`/proc/**` as nobody: the walk ends, memory stays small, the pattern says why it is incomplete."""
    base = Path(tempfile.mkdtemp(prefix="gce-proc-"))
    try:
        base.chmod(0o755)
        (base / "app.pem").write_bytes(root.cert_pem)
        (base / "app.pem").chmod(0o644)

        def expand() -> str:  # (imports happen before the fork: nobody can't read this interpreter's stdlib)
            tracemalloc.start()
            found, patterns = globs.Finder().expand(
                [FileSource(paths=["/proc/**"]), FileSource(paths=[f"{base}/app.pem"])], deadline=time.monotonic() + 30
            )
            _, peak = tracemalloc.get_traced_memory()
            reasons = [p.reason.value for p in patterns[0].problems]
            paths = {w.path for w in found}
            return json.dumps({"app": f"{base}/app.pem" in paths, "peak": peak, "reasons": reasons})

        seen = json.loads(as_nobody(expand))
    finally:
        shutil.rmtree(base)
    assert seen["app"]
    # The walk ended (as_nobody returned); the 30 s deadline bounds it, a quiet machine takes about a second.
    assert seen["peak"] < 200 << 20, f"{seen['peak'] >> 20} MiB"
    assert "permission_denied" in seen["reasons"]


def test_an_optional_pattern_that_matches_nothing_is_no_problem(tmp_path: Path) -> None:
    """optional: true (the embedded default's example globs) never warns no_match; a required one does."""
    missing = str(tmp_path / "nowhere" / "*.pem")
    _, optional = globs.expand([FileSource(paths=[missing], optional=True)])
    _, required = globs.expand([FileSource(paths=[missing])])
    assert optional[0].problems == ()
    assert [p.reason for p in required[0].problems] == [PatternReason.NO_MATCH]
