"""Can a Gunicorn target's workers read its files? Decided as the kernel would, from modes, owners and ACLs.

Gunicorn's master never reads the certificate or key: each worker loads them after dropping privileges to
``--user``/``--group``. So the question is asked as the workers' uid, gid and supplementary groups: every
directory on the way needs search (x) permission, symlinks are followed (certbot's ``live/`` -> ``archive/``),
the file itself needs read (r). A POSIX ACL is evaluated from its entries; one this reader can't evaluate is
``unknown``, never guessed. Root reads everything (CAP_DAC_OVERRIDE), except what the exporter itself can't see.
"""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass

from gunicorn_cert_exporter.runbook import Access, Identity

_MAX_LINKS = 40  # Linux's own limit on symlinks followed in one lookup
_ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_READ, _EXECUTE = 4, 1
__all__ = ["Access", "Identity", "Verdict", "can_read", "key_exposed"]  # Access and Identity live in runbook


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether an identity can read a file, and if not, which path stops it and why."""

    access: Access
    detail: str = ""


def can_read(path: str, who: Identity) -> Verdict:
    """Tell whether ``who`` can open ``path`` for reading, following symlinks, searching every directory."""
    if not os.path.isabs(path):
        return Verdict(Access.UNKNOWN, f"{path} is not an absolute path")
    pending = [part for part in path.split("/") if part]
    current, links = "/", 0
    while pending:
        verdict = _check(current, who, _EXECUTE, "search")
        if verdict is not None:
            return verdict
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            current = os.path.dirname(current.rstrip("/")) or "/"
            continue
        candidate = os.path.join(current, part)
        try:
            info = os.lstat(candidate)
        except FileNotFoundError:
            return Verdict(Access.DENIED, f"{candidate} does not exist")
        except OSError as exc:
            return Verdict(Access.UNKNOWN, f"the exporter can't see {candidate}: {exc.strerror}")
        if stat.S_ISLNK(info.st_mode):
            links += 1
            if links > _MAX_LINKS:
                return Verdict(Access.DENIED, f"{path}: too many levels of symbolic links")
            target = os.readlink(candidate)
            pending = [p for p in target.split("/") if p] + pending
            current = "/" if target.startswith("/") else current
            continue
        current = candidate
    return _check(current, who, _READ, "read") or Verdict(Access.READABLE)


def _check(path: str, who: Identity, bit: int, what: str) -> Verdict | None:
    """Return None when ``who`` has ``bit`` on ``path``, else why not."""
    try:
        info = os.stat(path)
    except OSError as exc:
        return Verdict(Access.UNKNOWN, f"the exporter can't see {path}: {exc.strerror}")
    if who.uid == 0:
        if bit == _EXECUTE and stat.S_ISDIR(info.st_mode):
            return None  # root searches every directory
        if bit == _READ:
            return None
    acl = _acl(path)
    if acl is _UNREADABLE_ACL:
        return Verdict(Access.UNKNOWN, f"{path} has an ACL the exporter can't read")
    allowed = _acl_allows(acl, info, who, bit) if isinstance(acl, tuple) else _mode_allows(info, who, bit)
    if allowed:
        return None
    owner = f"{info.st_uid}:{info.st_gid} {stat.filemode(info.st_mode)}"
    acl_note = " with an ACL" if isinstance(acl, tuple) else ""
    return Verdict(Access.DENIED, f"uid {who.uid} gid {who.gid} can't {what} {path} ({owner}{acl_note})")


def _mode_allows(info: os.stat_result, who: Identity, bit: int) -> bool:
    if who.uid == info.st_uid:
        return bool(info.st_mode >> 6 & bit)
    if info.st_gid in who.all_groups:
        return bool(info.st_mode >> 3 & bit)
    return bool(info.st_mode & bit)


_UNREADABLE_ACL = object()
_Entry = tuple[int, int, int]  # tag, permissions, id


def _acl(path: str) -> tuple[_Entry, ...] | object | None:
    """Return a path's access ACL entries, None when it has none, or _UNREADABLE_ACL."""
    getxattr = getattr(os, "getxattr", None)
    if getxattr is None:
        return None  # not Linux: modes only
    try:
        raw = getxattr(path, _ACL_XATTR)
    except OSError:
        return None  # ENODATA (no ACL), or a file system without xattrs
    if len(raw) < 4 or (len(raw) - 4) % 8 or struct.unpack_from("<I", raw)[0] != _ACL_VERSION:
        return _UNREADABLE_ACL
    return tuple(struct.unpack_from("<HHI", raw, offset) for offset in range(4, len(raw), 8))


def _acl_allows(entries: tuple[_Entry, ...], info: os.stat_result, who: Identity, bit: int) -> bool:
    """POSIX.1e access check (acl(5), 'ACCESS CHECK ALGORITHM')."""
    mask = next((perm for tag, perm, _ in entries if tag == _MASK), 7)
    if who.uid == info.st_uid:
        return any(tag == _USER_OBJ and perm & bit for tag, perm, _ in entries)
    named = [perm for tag, perm, ident in entries if tag == _USER and ident == who.uid]
    if named:
        return bool(named[0] & mask & bit)
    groups = [
        perm
        for tag, perm, ident in entries
        if (tag == _GROUP_OBJ and info.st_gid in who.all_groups) or (tag == _GROUP and ident in who.all_groups)
    ]
    if groups:
        return any(perm & mask & bit for perm in groups)
    return any(tag == _OTHER and perm & bit for tag, perm, _ in entries)


def key_exposed(path: str) -> bool | None:
    """Tell whether a key file (after symlinks) is readable or writable by others, or writable by its group."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return bool(mode & (stat.S_IROTH | stat.S_IWOTH | stat.S_IWGRP))
