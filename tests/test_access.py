"""Can the workers read the files? Every answer is compared with the kernel's: a real open() as that identity."""

from __future__ import annotations

import errno
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gunicorn_cert_exporter.sources.access import Access, Identity, can_read, key_exposed
from tests.support import unavailable

pytestmark = pytest.mark.integration  # forks or runs external programs

NOBODY = Identity(uid=65534, gid=65534)
OTHER_GROUP = 4242  # no user has it as primary group here


def kernel_says(path: Path, who: Identity) -> Access:
    """Open the file for reading in a child running as ``who``: the kernel's own answer."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover  (the child)
        answer = b"?"
        try:
            os.setgroups(sorted(who.groups))
            os.setgid(who.gid)
            os.setuid(who.uid)
            with open(path, "rb"):
                answer = b"r"
        except PermissionError:
            answer = b"d"
        except OSError as exc:
            answer = b"d" if exc.errno in (errno.ENOENT, errno.ELOOP) else b"?"
        finally:
            os.write(write_fd, answer)
            os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    with os.fdopen(read_fd, "rb") as pipe:
        said = pipe.read()
    return {b"r": Access.READABLE, b"d": Access.DENIED}.get(said, Access.UNKNOWN)


@pytest.fixture
def tree() -> Iterator[Path]:
    """A directory every identity may search (pytest's tmp_path is 0700 root: nobody could search it)."""
    if os.getuid() != 0:
        unavailable("root (the checks run as other identities)", ci_must="CI runs the suite as root")
    base = Path(tempfile.mkdtemp(prefix="gce-access-"))
    os.chmod(base, 0o755)  # noqa: S103  (searchable by the identities under test, as /etc/ssl is)
    try:
        yield base
    finally:
        shutil.rmtree(base)


def _key(directory: Path, mode: int, *, uid: int = 0, gid: int = 0, name: str = "privkey.pem") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    return path


def _agree(path: Path, who: Identity, expected: Access) -> None:
    verdict = can_read(str(path), who)
    assert kernel_says(path, who) is expected, "the test's premise"
    assert verdict.access is expected, verdict.detail


def test_a_renewed_key_0600_root_is_unreadable_to_nobody(tree: Path) -> None:
    key = _key(tree / "tls", 0o600)
    _agree(key, NOBODY, Access.DENIED)
    assert str(key) in can_read(str(key), NOBODY).detail


def test_group_read_through_the_primary_or_a_supplementary_group(tree: Path) -> None:
    key = _key(tree / "tls", 0o640, gid=65534)
    _agree(key, NOBODY, Access.READABLE)
    other = _key(tree / "tls", 0o640, gid=OTHER_GROUP, name="other.pem")
    _agree(other, NOBODY, Access.DENIED)
    _agree(other, Identity(uid=65534, gid=65534, groups=frozenset({OTHER_GROUP})), Access.READABLE)


def test_a_directory_on_the_way_without_search_permission_denies(tree: Path) -> None:
    key = _key(tree / "private" / "tls", 0o640, gid=65534)
    os.chmod(tree / "private", 0o700)
    _agree(key, NOBODY, Access.DENIED)
    assert "private" in can_read(str(key), NOBODY).detail


def test_symlinks_are_followed_into_the_archive_as_certbot_lays_them_out(tree: Path) -> None:
    key = _key(tree / "archive" / "site", 0o640, gid=65534, name="privkey2.pem")
    (tree / "live" / "site").mkdir(parents=True)
    (tree / "live" / "site" / "privkey.pem").symlink_to("../../archive/site/privkey2.pem")
    link = tree / "live" / "site" / "privkey.pem"
    _agree(link, NOBODY, Access.READABLE)
    os.chmod(tree / "archive", 0o700)  # certbot's default for archive/: only root may search it
    _agree(link, NOBODY, Access.DENIED)
    assert key.exists()


def test_root_reads_everything(tree: Path) -> None:
    _agree(_key(tree / "tls", 0o000), Identity(uid=0, gid=0), Access.READABLE)


def _set_acl(path: Path, entries: list[tuple[int, int, int]]) -> None:
    raw = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, ident) for tag, perm, ident in entries)
    try:
        os.setxattr(path, "system.posix_acl_access", raw)
    except OSError as exc:
        if exc.errno == errno.EOPNOTSUPP:
            pytest.fail(f"{path}'s file system has no POSIX ACLs: the test needs them")
        raise


@pytest.mark.parametrize(("mask", "expected"), [(4, Access.READABLE), (0, Access.DENIED)])
def test_a_posix_acl_is_evaluated_with_its_mask(tree: Path, mask: int, expected: Access) -> None:
    key = _key(tree / "tls", 0o600)
    # user::rw-, user:nobody:r--, group::---, mask, other::---
    _set_acl(key, [(0x01, 6, 0xFFFFFFFF), (0x02, 4, 65534), (0x04, 0, 0xFFFFFFFF), (0x10, mask, 0xFFFFFFFF),
                   (0x20, 0, 0xFFFFFFFF)])  # fmt: skip
    _agree(key, NOBODY, expected)


def test_an_acl_it_cannot_parse_is_unknown_never_guessed(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = _key(tree / "tls", 0o644)
    real: Callable[..., bytes] = os.getxattr
    monkeypatch.setattr(os, "getxattr", lambda p, n, *a: b"\x03\x00" if p == str(key) else real(p, n, *a))
    assert can_read(str(key), NOBODY).access is Access.UNKNOWN


@pytest.mark.parametrize(("mode", "exposed"), [(0o600, False), (0o640, False), (0o644, True), (0o660, True)])
def test_a_key_readable_by_others_or_writable_by_its_group_is_exposed(tree: Path, mode: int, exposed: bool) -> None:
    assert key_exposed(str(_key(tree / "tls", mode))) is exposed
