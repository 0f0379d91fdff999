"""A Gunicorn config file's literal settings, read with ``ast``: never executed.

Gunicorn's config file is Python, which Gunicorn executes (and re-executes on every HUP), then keeps every
top-level name that is one of its settings. Here only what a reader can know without running it counts: a
setting bound once, at the top level, to a literal. Everything else is reported as computed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace

# The settings discovery needs, by their config-file name (Gunicorn's Setting.name).
WANTED = (
    "bind",
    "ca_certs",
    "certfile",
    "chdir",
    "control_socket",
    "group",
    "initgroups",
    "keyfile",
    "pidfile",
    "proc_name",
    "user",
    "worker_class",
)


@dataclass(frozen=True, slots=True)
class Settings:
    """The settings of one source (or of all three, merged); ``None`` where the source says nothing."""

    bind: tuple[str, ...] | None = None
    ca_certs: str | None = None
    certfile: str | None = None
    chdir: str | None = None
    config: str | None = None  # -c as given (command line and environment only)
    control_socket: str | None = None
    group: str | None = None
    initgroups: bool | None = None
    keyfile: str | None = None
    pidfile: str | None = None
    proc_name: str | None = None
    user: str | None = None
    worker_class: str | None = None

    def over(self, base: Settings) -> Settings:
        """Return ``base`` with every setting this one states put over it (Gunicorn's precedence)."""
        stated = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        return replace(base, **stated)


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """A config file's literal settings, and the wanted ones it computes (their values can't be known)."""

    settings: Settings = Settings()
    computed: frozenset[str] = frozenset()


def parse_config_file(source: bytes) -> ConfigFile:
    """Read a Gunicorn config file's literal top-level settings; never execute it.

    A wanted setting counts only when it is bound once, at the top level, to a literal. Anything that could bind it
    otherwise (an assignment inside ``if``/``for``/``try``, a function's ``global``, an import, ``import *``,
    ``exec``, ``globals()``, ``vars()``, ``setattr``) makes it computed. Raises ValueError for a file that is not
    Python.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as exc:
        raise ValueError(f"not Python: {exc}") from None
    if any(_rebinds_anything(node) for node in ast.walk(tree)):
        return ConfigFile(computed=frozenset(WANTED))  # anything may be bound where no reader can see it
    literal: dict[str, object] = {}
    computed: set[str] = set()
    simple = [node for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign))]
    for node in simple:
        for name, value in _top_level_bindings(node):
            if name not in WANTED:
                continue
            if name in literal or name in computed or value is _COMPUTED:
                computed.add(name)
                literal.pop(name, None)
            else:
                literal[name] = value
    plain = {id(node) for node in simple}
    for inner in ast.walk(tree):
        if id(inner) in plain:
            continue
        for name in _nested_bindings(inner):
            if name in WANTED:
                computed.add(name)
                literal.pop(name, None)
    settings = _settings_of(literal)
    return ConfigFile(settings=settings.settings, computed=frozenset(computed | settings.invalid))


_COMPUTED = object()


def _top_level_bindings(node: ast.stmt) -> Iterator[tuple[str, object]]:
    targets: list[ast.expr] = []
    value_node: ast.expr | None = None
    if isinstance(node, ast.Assign):
        targets, value_node = node.targets, node.value
    elif isinstance(node, ast.AnnAssign) and node.value is not None:
        targets, value_node = [node.target], node.value
    elif isinstance(node, ast.AugAssign):
        targets = [node.target]
    for target in targets:
        if isinstance(target, ast.Name):
            yield target.id, _literal(value_node) if len(targets) == 1 else _COMPUTED
        else:
            for name in ast.walk(target):
                if isinstance(name, ast.Name):
                    yield name.id, _COMPUTED  # unpacking: a, b = ... is not worth reading


def _literal(node: ast.expr | None) -> object:
    if node is None:
        return _COMPUTED
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _COMPUTED


def _nested_bindings(node: ast.AST) -> Iterator[str]:
    """Names bound by statements that are not plain top-level assignments."""
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For, ast.AsyncFor, ast.comprehension)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for target in targets:
            yield from (n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    elif isinstance(node, ast.NamedExpr):
        yield node.target.id
    elif isinstance(node, (ast.With, ast.AsyncWith)):
        for item in node.items:
            if item.optional_vars is not None:
                yield from (n.id for n in ast.walk(item.optional_vars) if isinstance(n, ast.Name))
    elif isinstance(node, (ast.Import, ast.ImportFrom)):
        yield from ((alias.asname or alias.name).split(".")[0] for alias in node.names)
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        yield node.name
    elif isinstance(node, ast.Global):
        yield from node.names
    elif isinstance(node, ast.ExceptHandler) and node.name:
        yield node.name


def _rebinds_anything(node: ast.AST) -> bool:
    """Tell whether a node could bind names no reader can see: ``import *``, exec, globals() and the like."""
    if isinstance(node, ast.ImportFrom) and any(alias.name == "*" for alias in node.names):
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return node.func.id in ("exec", "eval", "globals", "vars", "setattr", "locals", "__import__", "compile")
    if isinstance(node, ast.Attribute) and node.attr in ("__dict__", "modules"):
        return True
    return isinstance(node, ast.Name) and node.id in ("__builtins__", "sys")


@dataclass(frozen=True, slots=True)
class _Checked:
    settings: Settings
    invalid: frozenset[str]


def _settings_of(values: Mapping[str, object]) -> _Checked:
    """Keep the literal values of the types Gunicorn accepts; the rest can't be read as Gunicorn would."""
    kept: dict[str, object] = {}
    invalid: set[str] = set()
    for name, value in values.items():
        if name == "bind" and isinstance(value, str):
            kept[name] = (value,)
        elif name == "bind" and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            kept[name] = tuple(value)
        elif name == "initgroups" and isinstance(value, bool):
            kept[name] = value
        elif name in ("user", "group") and isinstance(value, (str, int)) and not isinstance(value, bool):
            kept[name] = str(value)
        elif name not in ("bind", "initgroups", "user", "group") and isinstance(value, str):
            kept[name] = value
        elif value is not None:
            invalid.add(name)
    return _Checked(settings=Settings(**kept), invalid=frozenset(invalid))  # type: ignore[arg-type]
