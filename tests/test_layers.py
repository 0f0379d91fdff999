"""Imports point one way, as docs/architecture.md draws them: wiring on top, values at the bottom."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "gunicorn_cert_exporter"

# The diagram's rows, top to bottom: a module (or package) may import its own row and the rows below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__main__", "cli", "exporter", "demo", "demo_workers"),
    ("web",),
    ("service", "config_reloads", "metrics", "revocation_probe"),
    ("scanning",),
    ("targets", "discovered", "status", "ari_view", "revocation", "revocation_judge", "check"),
    ("sources",),
    (
        "model", "reasons", "file_parts", "vocabulary", "boundary", "status_rows", "bands", "renewal", "window",
        "config", "config_parts", "config_values", "allow_patterns", "allowlist", "safe_read", "escapes", "text",
        "logs", "demo_app", "runbook", "config_runbook", "status_runbook", "revocation_config", "atomic", "__init__",
    ),
)  # fmt: skip
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def _part(module: str) -> str:
    """Return the top-level module or subpackage of the package a dotted name belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gunicorn_cert_exporter"):
            if node.module == "gunicorn_cert_exporter":  # from gunicorn_cert_exporter import status, __version__
                found |= {alias.name for alias in node.names if alias.name != "__version__"}
            else:
                found.add(_part(node.module))
        elif isinstance(node, ast.Import):
            found |= {_part(alias.name) for alias in node.names if alias.name.startswith("gunicorn_cert_exporter.")}
    return found


def test_every_module_has_a_place_in_the_diagram() -> None:
    parts = {_part(".".join(("gunicorn_cert_exporter", *p.relative_to(PACKAGE).with_suffix("").parts))) for p in
             PACKAGE.rglob("*.py")}  # fmt: skip
    assert parts - set(LEVEL) == set(), "add the new module to LAYERS and to docs/architecture.md"


def test_no_module_imports_one_drawn_above_it() -> None:
    upward = []
    for path in PACKAGE.rglob("*.py"):
        source = _part(".".join(("gunicorn_cert_exporter", *path.relative_to(PACKAGE).with_suffix("").parts)))
        for target in _imports(path) - {source}:
            if LEVEL.get(target, 0) < LEVEL.get(source, 0):
                upward.append(f"{path.relative_to(PACKAGE)} imports {target}")
    assert upward == []
