"""gunicorn.py against real Gunicorn processes: prove the master, never a worker, a shell or a stranger."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from gunicorn_cert_exporter.model import MasterReason, MasterState
from gunicorn_cert_exporter.sources import gunicorn, listeners
from gunicorn_cert_exporter.sources.listeners import Binding
from tests.support import PKI, Gunicorn, Issued, free_port, write_chain
from tests.support.waiting import eventually, finishes


def no_setproctitle(tmp_path: Path) -> dict[str, str]:
    """An environment in which Gunicorn can't import setproctitle (master and workers look alike)."""
    shadow = tmp_path / "shadow"
    shadow.mkdir(exist_ok=True)
    (shadow / "setproctitle.py").write_text("raise ImportError('hidden for the test')\n")
    return {"PYTHONPATH": str(shadow)}


@pytest.fixture(params=["setproctitle", "plain"])
def running(request: pytest.FixtureRequest, tmp_path: Path, pki: PKI, root: Issued) -> Iterator[Gunicorn]:
    cert, key = write_chain(tmp_path, "tls", pki.leaf(root))
    env = no_setproctitle(tmp_path) if request.param == "plain" else None
    server = Gunicorn(tmp_path, worker_class="sync", cert=cert, key=key, workers=2, env=env)
    yield server
    server.stop()


def _wait_workers(pid: int, count: int) -> MasterState:
    def inspected() -> MasterState | None:
        state = gunicorn.inspect(pid)
        return state if len(state.workers) == count else None

    return eventually(inspected, f"{count} workers of {pid}", timeout=15)


@pytest.mark.integration
def test_master_is_proven_with_its_workers(running: Gunicorn) -> None:
    state = gunicorn.locate(pidfile=str(running.pidfile), pid=None)
    assert state.up and state.pid == running.process.pid
    assert state.start_time == psutil.Process(running.process.pid).create_time()
    state = _wait_workers(running.process.pid, 2)
    assert len(state.workers) == 2 and all(w.ppid == running.process.pid for w in state.workers)


@pytest.mark.integration
def test_a_pidfile_naming_a_worker_is_refused(running: Gunicorn, tmp_path: Path) -> None:
    worker = _wait_workers(running.process.pid, 2).workers[0]
    pidfile = tmp_path / "worker.pid"
    pidfile.write_text(f"{worker.pid}\n")
    state = gunicorn.locate(pidfile=str(pidfile), pid=None)
    assert not state.up and state.error is MasterReason.NOT_MASTER


@pytest.mark.integration
def test_stale_missing_and_garbage_pidfiles(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pidfile = tmp_path / "stale.pid"
    pidfile.write_text(f"{dead.pid}\n")
    assert gunicorn.locate(pidfile=str(pidfile), pid=None).error is MasterReason.NO_PROCESS
    assert gunicorn.locate(pidfile=str(tmp_path / "missing.pid"), pid=None).error is MasterReason.PIDFILE_MISSING
    pidfile.write_text("not a pid")
    assert gunicorn.locate(pidfile=str(pidfile), pid=None).error is MasterReason.PIDFILE_INVALID


@pytest.mark.integration
def test_other_processes_and_wrapper_shells_are_not_gunicorn(tmp_path: Path, pki: PKI, root: Issued) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    cert, key = write_chain(tmp_path, "tls", pki.leaf(root))
    port = free_port()
    # A shell that does not exec Gunicorn: HUP to it would kill the shell, not reload Gunicorn.
    shell = subprocess.Popen(
        [
            "sh",
            "-c",
            f"{sys.executable} -m gunicorn --certfile {cert} --keyfile {key} "
            f"-b 127.0.0.1:{port} gunicorn_cert_exporter.demo_app:wsgi_app; true",
        ],
        cwd=tmp_path,
    )
    try:
        assert gunicorn.inspect(sleeper.pid).error is MasterReason.NOT_GUNICORN
        eventually(lambda: psutil.Process(shell.pid).children(), "the shell to start Gunicorn")
        assert gunicorn.inspect(shell.pid).error is MasterReason.NOT_GUNICORN
    finally:
        sleeper.kill()
        for child in psutil.Process(shell.pid).children(recursive=True):
            child.terminate()
        shell.wait(timeout=10)
        sleeper.wait()


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        (("gunicorn: master [app]",), True),
        (("/usr/bin/gunicorn", "app:app"), True),
        (("/venv/bin/python3", "/venv/bin/gunicorn", "app:app"), True),
        (("python3", "-m", "gunicorn", "app:app"), True),
        (("python3", "-u", "-m", "gunicorn", "app:app"), True),
        (("sh", "-c", "gunicorn app:app"), False),
        (("bash", "/usr/local/bin/run-gunicorn.sh"), False),
        (("python3", "-m", "http.server"), False),
        (("python3", "manage.py", "--gunicorn"), False),
        (("/usr/bin/gunicorn3", "app:app"), True),
        (("/venv/bin/python3", "/venv/bin/gunicorn-cert-exporter", "demo"), False),  # this exporter
        (("/usr/local/bin/gunicorn-cert-exporter", "serve"), False),
        (("python3", "-m", "gunicorn_cert_exporter"), False),
        (("/usr/local/bin/gunicorn_start",), False),
        (("python3", "/venv/lib/python3.11/site-packages/gunicorn/__main__.py", "app:app"), True),  # after USR2
        (("python3", "/tmp/gunicorn_main.py"), False),
        ((), False),
    ],
)
def test_is_gunicorn(cmdline: tuple[str, ...], expected: bool) -> None:
    assert gunicorn.is_gunicorn(cmdline) is expected


@pytest.mark.integration
@pytest.mark.parametrize("use_pidfd", [True, False], ids=["pidfd", "kill"])
def test_signal_refuses_a_pid_whose_start_time_changed(running: Gunicorn, use_pidfd: bool) -> None:
    """Both ways of signalling prove the identity first; a HUP would replace every worker."""
    real = _wait_workers(running.process.pid, 2)
    assert real.start_time is not None
    before = {w.pid for w in real.workers}
    reused = gunicorn.MasterIdentity(running.process.pid, real.start_time + 1.0)  # as if the pid were reused
    with pytest.raises(ProcessLookupError):
        gunicorn.send_signal(reused, signal.SIGHUP, use_pidfd=use_pidfd)
    running.barrier()  # every signal sent before this one has been handled: a HUP would show now
    assert "hup" not in running.signals_handled()
    assert before <= {w.pid for w in gunicorn.inspect(running.process.pid).workers}  # (TTIN added one)


@pytest.mark.parametrize("kind", ["fifo", "directory", "device", "huge"])
def test_a_pidfile_that_is_not_a_small_regular_file_is_invalid_without_blocking(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "app.pid"
    if kind == "fifo":
        os.mkfifo(path)  # no writer: a blocking open would wait forever
    elif kind == "directory":
        path.mkdir()
    elif kind == "huge":
        path.write_bytes(b"1" * 100_000)
    else:
        path = Path("/dev/zero")
    pauses: list[float] = []
    read = finishes(lambda: gunicorn.read_pidfile(str(path), sleep=pauses.append), "read_pidfile")
    assert read == (None, MasterReason.PIDFILE_INVALID)
    assert pauses == []  # refused on the first look: no retry as if Gunicorn were rewriting it


def test_proc_net_tcp_tables_parse_to_listeners() -> None:
    table = (
        b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        b"   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1\n"
        b"   1: 0100007F:1F91 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4243 1\n"
    )
    v6 = (
        b"  sl  local_address                         remote_address                        st ... inode\n"
        b"   0: 00000000000000000000000001000000:1F92 00000000000000000000000000000000:0000 0A "
        b"00000000:00000000 00:00000000 00000000     0        0 777 1\n"
    )
    v4 = listeners.parse_table(table)
    assert v4 == [listeners.Listener(ipaddress.ip_address("127.0.0.1"), 8080, 4242)]  # the ESTABLISHED one is not
    assert listeners.parse_table(v6) == [listeners.Listener(ipaddress.ip_address("::1"), 8082, 777)]
    loopback = ipaddress.ip_address("127.0.0.1")
    assert listeners.matches(v4[0], listeners.Binding(8080, loopback))
    assert listeners.matches(v4[0], listeners.Binding(8080, None))
    assert not listeners.matches(v4[0], listeners.Binding(8080, ipaddress.ip_address("127.0.0.2")))
    assert not listeners.matches(v4[0], listeners.Binding(8081, loopback))
    wildcard = listeners.Listener(ipaddress.ip_address("::"), 8080, 1)
    assert listeners.matches(wildcard, listeners.Binding(8080, loopback))


@pytest.mark.integration
def test_the_master_is_proven_to_serve_its_port_and_no_other(running: Gunicorn) -> None:
    loopback = ipaddress.ip_address("127.0.0.1")
    proven = gunicorn.locate(pidfile=str(running.pidfile), pid=None, binding=Binding(port=running.port, host=loopback))
    assert proven.up, proven.detail
    elsewhere = gunicorn.locate(pidfile=str(running.pidfile), pid=None, binding=Binding(port=free_port(), host=None))
    assert elsewhere.error is MasterReason.NOT_LISTENING
