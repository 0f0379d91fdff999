"""Write a state file so that a reader sees the old content or the new one whole, also after a crash."""

from __future__ import annotations

import contextlib
import os
import tempfile


def write_atomically(directory: str, path: str, body: bytes, *, prefix: str = ".state-") -> None:
    """Write ``body`` to ``path`` in ``directory``: temp file, fsync, rename, fsync the directory."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=directory)
    try:
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)
