"""What a running Gunicorn master was told, read the way Gunicorn reads it and never executed.

Gunicorn builds its settings from three places, each overriding the one before: its config file, the
``GUNICORN_CMD_ARGS`` environment variable, then the command line (``gunicorn/app/base.py``, ``load_config``).
The config file is ``-c PATH`` / ``-c file:PATH`` (command line first, then the environment), else
``gunicorn.conf.py`` in the directory Gunicorn was launched from; it is Python, which Gunicorn executes. Here it
is parsed with ``ast`` and only literal top-level assignments count: a setting computed by code is reported as
such, never guessed and never run.

Everything here is pure: the caller reads ``/proc`` and the config file (bounded) and passes bytes and strings.
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, NoReturn

from gunicorn_cert_exporter.sources.gunicorn_conf import WANTED, ConfigFile, Settings, parse_config_file

_PATHS = ("certfile", "keyfile", "ca_certs", "pidfile", "control_socket")

# Gunicorn's command-line options (gunicorn/config.py, 20.1 to 27), by how they take values. Every option must be
# known, or the value of an unknown one would be read as a positional argument and shift what follows.
_VALUE_OPTIONS = (
    "-c --config|-b --bind|--backlog|-w --workers|-k --worker-class|--threads|--worker-connections|--max-requests|"
    "--max-requests-jitter|-t --timeout|--graceful-timeout|--keep-alive|--limit-request-line|--limit-request-fields|"
    "--limit-request-field_size|--reload-engine|--reload-extra-file|--chdir|-e --env|-p --pid|--worker-tmp-dir|"
    "-u --user|-g --group|-m --umask|--forwarded-allow-ips|--access-logfile|--access-logformat|"
    "--error-logfile --log-file|--log-level|--logger-class|--log-config|--log-config-json|--log-syslog-to|"
    "--log-syslog-prefix|--log-syslog-facility|--statsd-host|--dogstatsd-tags|--statsd-prefix|-n --name|"
    "--pythonpath|--paste --paster|--proxy-allow-from|--protocol|--uwsgi-allow-from|--keyfile|--certfile|"
    "--ssl-version|--cert-reqs|--ca-certs|--ciphers|--http-protocols|--http2-cleartext|"
    "--http2-max-concurrent-streams|--http2-initial-window-size|--http2-max-frame-size|"
    "--http2-max-header-list-size|--paste-global|--forwarder-headers|--header-map|--asgi-loop|--asgi-lifespan|"
    "--asgi-disconnect-grace-period|--http-parser|--root-path|--dirty-app|--dirty-workers|--dirty-timeout|"
    "--dirty-threads|--dirty-graceful-timeout|--control-socket|--control-socket-mode|--statsd-socket"
)
_APPEND = frozenset({"--bind", "--reload-extra-file", "--env", "--paste-global", "--dirty-app"})
_FLAG_OPTIONS = (
    "--reload|--spew|--check-config|--print-config|--preload|--no-sendfile|--reuse-port|-D --daemon|--initgroups|"
    "--disable-redirect-access-to-syslog|--capture-output|--log-syslog|-R --enable-stdio-inheritance|"
    "--enable-backlog-metric|--suppress-ragged-eofs|--do-handshake-on-connect|--permit-obsolete-folding|"
    "--strip-header-spaces|--permit-unconventional-http-method|--permit-unconventional-http-version|"
    "--casefold-http-method|--no-control-socket"
)
_OPTIONAL_VALUE = ("--proxy-protocol",)  # nargs="?"
# Command-line destination -> config-file name, where they differ.
_DEST_TO_SETTING = {"name": "proc_name", "pid": "pidfile", "worker_class": "worker_class"}


class Problem(str, Enum):
    """Why what a master was told can't be learned without running its code."""

    CONFIG_NOT_LITERAL = "config_not_literal"  # the config file computes the setting (or is a python: module)
    CONFIG_LOCATION_UNKNOWN = "config_location_unknown"  # a relative config path after --chdir
    CONFIG_UNREADABLE = "config_unreadable"  # missing, unreadable, too large or not Python
    ARGS_UNREADABLE = "args_unreadable"  # GUNICORN_CMD_ARGS or the command line does not parse
    CMDLINE_HIDDEN = "cmdline_hidden"  # setproctitle wrote its title over the command line (and the environment)


@dataclass(frozen=True, slots=True)
class Learned:
    """What a master was told, with relative paths resolved; or why some of it can't be known."""

    settings: Settings
    config_file: str | None = None  # the config file read, or the one that would be needed
    problem: Problem | None = None
    detail: str = ""


class _ArgsError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would print and exit
        raise _ArgsError(message)


def _parser() -> _Parser:
    parser = _Parser(prog="gunicorn", add_help=False)  # allow_abbrev stays on, as in Gunicorn
    for group, kwargs in ((_VALUE_OPTIONS, {}), (_FLAG_OPTIONS, {"action": "store_true"})):
        for spec in group.split("|"):
            names = spec.split()
            action = "append" if set(names) & _APPEND else kwargs.get("action", "store")
            parser.add_argument(*names, action=action, dest=names[-1].lstrip("-").replace("-", "_"))
    for name in _OPTIONAL_VALUE:
        parser.add_argument(name, nargs="?", dest=name.lstrip("-").replace("-", "_"))
    parser.add_argument("-v", "--version", action="store_true")
    parser.add_argument("-h", "--help", action="store_true")
    parser.add_argument("args", nargs="*")
    return parser


_PARSER = _parser()


def parse_args(args: Sequence[str]) -> Settings:
    """Return what Gunicorn's own options say, from the arguments after the program name.

    Raises ValueError when they don't parse (Gunicorn itself would not have started with them).
    """
    try:
        parsed, _unknown = _PARSER.parse_known_args(list(args))
    except _ArgsError as exc:
        raise ValueError(str(exc)) from None
    found = vars(parsed)
    values: dict[str, object] = {}
    for dest, value in found.items():
        setting = _DEST_TO_SETTING.get(dest, dest)
        if setting not in (*WANTED, "config") or value is None or value is False:
            continue
        values[setting] = tuple(value) if isinstance(value, list) else value
    return Settings(**values)  # type: ignore[arg-type]  # each value has its field's type by construction


def parse_environment(value: str) -> Settings:
    """Return what ``GUNICORN_CMD_ARGS`` says (shlex-split, as Gunicorn does); ValueError if it can't be split."""
    return parse_args(shlex.split(value))


def gunicorn_args(cmdline: Sequence[str]) -> tuple[str, ...] | None:
    """Return the arguments Gunicorn parses from a master's command line, or None when they are not visible.

    Forms: ``gunicorn ARGS``, ``python [opts] /path/gunicorn ARGS``, ``python [opts] -m gunicorn ARGS``,
    ``python .../gunicorn/__main__.py ARGS`` (a USR2 re-exec). A setproctitle title hides them.
    """
    if not cmdline or cmdline[0].startswith("gunicorn: "):
        return None
    if not os.path.basename(cmdline[0]).startswith(("python", "pypy")):
        return tuple(cmdline[1:])  # the console script itself
    index = 1
    while index < len(cmdline):
        arg = cmdline[index]
        if arg == "-m":
            return tuple(cmdline[index + 2 :])
        if arg.startswith("-m"):  # python -mgunicorn
            return tuple(cmdline[index + 1 :])
        if not arg.startswith("-"):
            return tuple(cmdline[index + 1 :])  # the script: bin/gunicorn, or gunicorn/__main__.py after USR2
        index += 2 if arg in ("-X", "-W", "--check-hash-based-pycs") else 1
    return ()


def learn(
    *,
    cmdline: Sequence[str],
    environment: str | None,
    cwd: str,
    read_config: Callable[[str], bytes | None],
) -> Learned:
    """Put together what a master was told: config file < ``GUNICORN_CMD_ARGS`` < command line.

    ``cwd`` is the master's working directory now (``/proc/PID/cwd``: after ``--chdir``). ``read_config`` reads a
    config file by absolute path, bounded, and returns None when it does not exist; it raises OSError when it
    can't be read. Relative cert, key, CA, pid and socket paths resolve against ``cwd``, as the workers open them.
    """
    args = gunicorn_args(cmdline)
    if args is None:
        # setproctitle reuses the memory /proc shows as cmdline (and environ, unless SPT_NOENV is set): the command
        # line may have named any config file or certfile, so nothing else found can be trusted to be the one.
        detail = f"the process title {cmdline[0][:80]!r} hides the command line (setproctitle)"
        return Learned(settings=Settings(), problem=Problem.CMDLINE_HIDDEN, detail=detail)
    try:
        cli = parse_args(args)
        env = parse_environment(environment) if environment else Settings()
    except ValueError as exc:
        return Learned(settings=Settings(), problem=Problem.ARGS_UNREADABLE, detail=str(exc)[:200])
    told = env.over(Settings())
    told = cli.over(told)
    location = cli.config or env.config
    file_part, outcome = _config_part(location=location, told=told, cwd=cwd, read_config=read_config)
    settings = _resolved(told.over(file_part.settings), cwd)
    return Learned(settings=settings, config_file=outcome.config_file, problem=outcome.problem, detail=outcome.detail)


@dataclass(frozen=True, slots=True)
class _FileOutcome:
    config_file: str | None = None
    problem: Problem | None = None
    detail: str = ""


def _config_part(
    *, location: str | None, told: Settings, cwd: str, read_config: Callable[[str], bytes | None]
) -> tuple[ConfigFile, _FileOutcome]:
    needed = [name for name in ("certfile", "keyfile") if getattr(told, name) is None]
    if location is not None and location.startswith("python:"):
        outcome = _FileOutcome(location, Problem.CONFIG_NOT_LITERAL, f"the config is the module {location[7:]}")
        return ConfigFile(), outcome if needed else _FileOutcome(location)
    path = (location or "gunicorn.conf.py").removeprefix("file:")
    if not os.path.isabs(path) and told.chdir is not None:
        # Gunicorn looks for it in the directory it was launched from, before --chdir: /proc does not say which.
        if needed:
            detail = f"{path} is relative to the directory Gunicorn was started in, which --chdir hides"
            return ConfigFile(), _FileOutcome(path, Problem.CONFIG_LOCATION_UNKNOWN, detail)
        return ConfigFile(), _FileOutcome()
    full = os.path.normpath(os.path.join(cwd, path))
    try:
        source = read_config(full)
    except OSError as exc:
        return ConfigFile(), _FileOutcome(full, Problem.CONFIG_UNREADABLE, f"{full}: {exc.strerror or exc}")
    if source is None:
        if location is not None:  # an explicit -c that is gone: Gunicorn would have refused to start
            return ConfigFile(), _FileOutcome(full, Problem.CONFIG_UNREADABLE, f"{full}: no such file")
        return ConfigFile(), _FileOutcome()
    try:
        parsed = parse_config_file(source)
    except ValueError as exc:
        return ConfigFile(), _FileOutcome(full, Problem.CONFIG_UNREADABLE, f"{full}: {exc}"[:200])
    chdir = parsed.settings.chdir
    if told.chdir is None and chdir is not None and os.path.normpath(os.path.join(cwd, chdir)) != cwd:
        detail = f"{full} moves Gunicorn to {chdir}: the file found here is not the one it read"
        return ConfigFile(), _FileOutcome(full, Problem.CONFIG_LOCATION_UNKNOWN, detail)
    computed = sorted(name for name in needed if name in parsed.computed)
    if computed:
        detail = f"{full} computes {', '.join(computed)}"
        return parsed, _FileOutcome(full, Problem.CONFIG_NOT_LITERAL, detail)
    return parsed, _FileOutcome(full)


def _resolved(settings: Settings, cwd: str) -> Settings:
    paths: dict[str, Any] = {
        name: os.path.normpath(os.path.join(cwd, value))
        for name in _PATHS
        if isinstance(value := getattr(settings, name), str) and value
    }
    return replace(settings, **paths)
