"""File trees for the scanners: deep trees without recursion, and one scan of some paths."""

from __future__ import annotations

import os
import time
from pathlib import Path

from gunicorn_cert_exporter import config
from gunicorn_cert_exporter.model import FileReason
from gunicorn_cert_exporter.sources import globs
from gunicorn_cert_exporter.sources.files import FileScanner


def deep_tree(base: Path, levels: int, files: dict[int, bytes]) -> None:
    """Make ``base/d/d/...`` ``levels`` deep without recursion, with ``c.pem`` holding ``files[level]`` there."""
    path = str(base)
    os.mkdir(path)
    for level in range(1, levels + 1):
        path += "/d"
        os.mkdir(path)
        if level in files:
            with open(path + "/c.pem", "wb") as handle:
                handle.write(files[level])


def remove_tree(base: Path) -> None:
    """Remove a tree of any depth without recursion (shutil.rmtree recurses, and so does pytest's cleanup)."""
    stack, directories = [str(base)], []
    while stack:
        directory = stack.pop()
        directories.append(directory)
        for entry in os.scandir(directory):
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            else:
                os.unlink(entry.path)
    for directory in reversed(directories):
        os.rmdir(directory)


def scan_paths(
    *paths: Path | str,
    max_size: int = 1 << 20,
    exclude: list[str] | None = None,
    password_file: str | None = None,
    password_env: str | None = None,
) -> dict[str, tuple[FileReason | None, int]]:
    """Expand ``paths`` as one files source and scan them once: {path: (reason, number of certificates)}."""
    source = config.FileSource(
        paths=[str(p) for p in paths],
        exclude=[] if exclude is None else exclude,
        password_file=password_file,
        password_env=password_env,
    )
    wanted, _ = globs.expand([source])
    results = FileScanner(clock=time.time, max_size=max_size).scan(wanted)
    return {r.path: (r.error, len(r.certs)) for r in results}
