"""The Gunicorn masters on this host, found in /proc with what each was told (real Gunicorn on loopback)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from gunicorn_cert_exporter.sources.discovery import Candidate, find_masters, masters_among
from gunicorn_cert_exporter.sources.gunicorn_settings import Problem
from tests.support import PKI, REPO, FakeGunicorn, eventually, free_port, stop_process, write_pair

pytestmark = pytest.mark.integration

APP = "gunicorn_cert_exporter.demo_app:wsgi_app"


class Launched:
    """A Gunicorn started the way a user starts it: flags, GUNICORN_CMD_ARGS or a gunicorn.conf.py in its cwd."""

    def __init__(
        self,
        directory: Path,
        args: list[str],
        *,
        env: dict[str, str] | None = None,
        conf: str | None = None,
        title: bool = False,
        python: Path = Path(sys.executable),
        app: str = APP,
    ) -> None:
        self.port = free_port()
        self.directory = directory
        if conf is not None:
            (directory / "gunicorn.conf.py").write_text(conf.replace("PORT", str(self.port)))
        path = [str(REPO)]
        if not title:  # without setproctitle the command line stays readable in /proc
            hide = directory / "no-setproctitle"
            hide.mkdir()
            (hide / "setproctitle.py").write_text("raise ImportError('hidden: run without setproctitle')\n")
            path.insert(0, str(hide))
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(path), **(env or {})}
        command = [str(python), "-m", "gunicorn", "-w", "1", *args, app]
        command = [part.replace("PORT", str(self.port)) for part in command]
        environment = {k: v.replace("PORT", str(self.port)) for k, v in environment.items()}
        with open(directory / "gunicorn.log", "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=directory, env=environment, stdout=log, stderr=subprocess.STDOUT
            )
        eventually(self._has_worker, f"gunicorn in {directory.name} to start a worker", timeout=30)

    def _has_worker(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError((self.directory / "gunicorn.log").read_text()[-2000:])
        return bool(psutil.Process(self.process.pid).children())


@pytest.fixture
def gunicorns(tmp_path: Path, pki: PKI) -> Iterator[dict[str, Launched]]:
    leaf = pki.leaf(pki.ca("Discovery CA"))
    started: dict[str, Launched] = {}
    for name in ("flags", "env", "conf", "plain"):
        (tmp_path / name).mkdir()
        write_pair(leaf, tmp_path / name / "cert.pem", tmp_path / name / "key.pem")
    try:
        started["flags"] = Launched(
            tmp_path / "flags", ["--certfile", "cert.pem", "--keyfile=key.pem", "-b", "127.0.0.1:PORT", "-n", "api"]
        )
        started["env"] = Launched(
            tmp_path / "env", [], env={"GUNICORN_CMD_ARGS": "--certfile cert.pem --keyfile key.pem -b 127.0.0.1:PORT"}
        )
        conf = 'certfile = "cert.pem"\nkeyfile = "key.pem"\nbind = "127.0.0.1:PORT"\n'
        started["conf"] = Launched(tmp_path / "conf", [], conf=conf)
        started["plain"] = Launched(tmp_path / "plain", ["-b", "127.0.0.1:PORT"])
        (tmp_path / "titled").mkdir()
        write_pair(leaf, tmp_path / "titled" / "cert.pem", tmp_path / "titled" / "key.pem")
        started["titled"] = Launched(
            tmp_path / "titled", ["--certfile", "cert.pem", "--keyfile", "key.pem", "-b", "127.0.0.1:PORT"], title=True
        )
        yield started
    finally:
        for launched in started.values():
            stop_process(launched.process)


@pytest.mark.usefixtures("gunicorns")
def test_each_master_is_found_with_what_it_was_told(gunicorns: dict[str, Launched]) -> None:
    found = {master.pid: master for master in find_masters()}
    for name in ("flags", "env", "conf"):
        master = found[gunicorns[name].process.pid]
        assert master.learned is not None and master.learned.problem is None, name
        assert master.learned.settings.certfile == str(gunicorns[name].directory / "cert.pem"), name
        assert master.learned.settings.keyfile == str(gunicorns[name].directory / "key.pem"), name
        assert [entry.port for entry in master.listeners] == [gunicorns[name].port], name
    assert found[gunicorns["flags"].process.pid].learned.settings.proc_name == "api"  # type: ignore[union-attr]
    titled = found[gunicorns["titled"].process.pid]
    assert titled.learned is not None and titled.learned.problem is Problem.CMDLINE_HIDDEN
    plain = found[gunicorns["plain"].process.pid]
    assert plain.learned is not None and plain.learned.settings.certfile is None
    workers = {
        child.pid for launched in gunicorns.values() for child in psutil.Process(launched.process.pid).children()
    }
    assert not workers & set(found), "a worker is never a master"


def test_a_script_named_gunicorn_is_not_a_master(tmp_path: Path, pki: PKI) -> None:
    leaf = pki.leaf(pki.ca("Fake CA"))
    write_pair(leaf, tmp_path / "cert.pem", tmp_path / "key.pem")
    fake = FakeGunicorn(tmp_path, cert=tmp_path / "cert.pem", key=tmp_path / "key.pem", form="script")
    try:
        assert psutil.Process(fake.process.pid).children(), "the fake forks a child, as a master would"
        assert fake.process.pid not in {master.pid for master in find_masters()}
    finally:
        fake.stop()


def test_masters_are_the_gunicorn_processes_with_gunicorn_children() -> None:
    command = ("/venv/bin/gunicorn", "app:app")
    candidates = [
        Candidate(pid=10, ppid=1, cmdline=command),  # a master
        Candidate(pid=11, ppid=10, cmdline=command),  # its worker
        Candidate(pid=12, ppid=10, cmdline=command),  # after USR2, the new master: it has its own worker
        Candidate(pid=13, ppid=12, cmdline=command),
        Candidate(pid=20, ppid=1, cmdline=command),  # booting, no worker yet: not provable, not a master yet
    ]
    assert [c.pid for c in masters_among(candidates)] == [10, 12]
