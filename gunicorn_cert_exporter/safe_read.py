"""Reads that can't block or grow without bound: a FIFO, a device or a huge file in place of a small file."""

from __future__ import annotations

import os
import stat

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | os.O_CLOEXEC


def read_capped(path: str, max_size: int) -> tuple[bytes, os.stat_result]:
    """Read a regular file up to one byte past the cap; a non-regular file gives no bytes and never blocks."""
    # O_NONBLOCK: a path swapped for a FIFO after the stat must not block the scan on open().
    fd = os.open(path, _OPEN_FLAGS)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return b"", info
        chunks, remaining = [], max_size + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks), info
    finally:
        os.close(fd)


def read_regular(path: str, cap: int) -> bytes:
    """Read at most ``cap`` bytes of a regular (or /proc) file; raise OSError for anything else, never block."""
    data, info = read_capped(path, cap)
    if not stat.S_ISREG(info.st_mode):
        raise IsADirectoryError(path)  # a FIFO, device, socket or directory: never read
    return data[:cap]
