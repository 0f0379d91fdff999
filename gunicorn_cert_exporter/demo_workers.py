"""Who the demo's Gunicorn workers run as, and how a renewed key is made unreadable to them, then fixed."""

from __future__ import annotations

import os
from pathlib import Path


class Workers:
    """Who the demo's Gunicorn workers run as, and how a renewed key is made unreadable to them, then fixed.

    As root: workers as nobody:nogroup, a renewed key 0600 root (what certbot writes), fixed with chgrp + chmod 0640.
    Otherwise Gunicorn can't switch users, so the workers run as you: the renewed key is made 0000 instead (you,
    its owner, can't read it either), and fixed with chmod 0600.
    """

    def __init__(self) -> None:
        self.root = os.geteuid() == 0
        # Workers that dropped to nobody import lazily from this Python's environment: under a 0700 directory (a
        # checkout in /root, a mktemp folder) they can't, so there the workers stay root and no key is unreadable.
        self.switch = self.root and _nobody_reaches(("gunicorn", "gunicorn_cert_exporter.demo_app"))
        self.group = _nogroup() if self.switch else os.getegid()
        self.args = ("--user", "nobody", "--group", "nogroup", "--preload") if self.switch else ()
        self.renewed_mode = 0o600 if self.root else 0o000
        self.blocks = self.switch or not self.root  # root's own workers read any key: nothing to block on
        # As you, a 0000 key is unreadable to the exporter too: the key_file rule blocks before the workers' access.
        self.blocked_by = ("worker_cannot_read",) if self.root else ("worker_cannot_read", "key_file")

    def install(self, key: Path) -> None:
        """Give the first key to the workers: group nogroup, 0640 (workers as nobody); 0600 otherwise."""
        os.chown(key, -1, self.group)
        key.chmod(0o640 if self.switch else 0o600)

    def fix(self, key: Path) -> str:
        """Make the renewed key readable to the workers again; say how."""
        self.install(key)
        return "chgrp nogroup + chmod 0640 on the key (once: certbot keeps both)" if self.switch else "chmod 0600"

    @property
    def who(self) -> str:
        if self.switch:
            return "workers as nobody:nogroup (--user/--group), key 0640 root:nogroup"
        if self.root:
            return "workers as root (nobody can't reach this Python's files: no user switch)"
        return f"workers as you (uid {os.geteuid()}: not root, so Gunicorn can't switch users)"


def _nobody_reaches(modules: tuple[str, ...]) -> bool:
    """Tell whether nobody can read the files of these modules (every directory on the way searched)."""
    import importlib.util

    from gunicorn_cert_exporter.runbook import Identity
    from gunicorn_cert_exporter.sources.access import Access, can_read

    nobody = Identity(uid=65534, gid=_nogroup())
    for module in modules:
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None or can_read(spec.origin, nobody).access is not Access.READABLE:
            return False
    return True


def _nogroup() -> int:
    import grp

    try:
        return grp.getgrnam("nogroup").gr_gid
    except KeyError:
        return 65534
