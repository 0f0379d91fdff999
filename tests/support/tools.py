"""External tools and prerequisites: skipped locally when missing, failed under CI, which must provide them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[2]


def unavailable(what: str, *, ci_must: str) -> NoReturn:
    """Skip a test whose prerequisite is missing locally; fail it under CI, which must provide it."""
    if os.environ.get("CI"):
        pytest.fail(f"{what}; {ci_must}")
    pytest.skip(what)


def require_tool(name: str) -> str:
    """Return a tool's path; skip locally when missing, fail under CI (CI must install it)."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed", ci_must=".ci/run must install it")
    return path
