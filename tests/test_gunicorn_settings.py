"""What a Gunicorn master was told: its command line, GUNICORN_CMD_ARGS and config file, read as Gunicorn does."""

from __future__ import annotations

import ast
import os
import subprocess
from pathlib import Path

import pytest

from gunicorn_cert_exporter.sources.gunicorn_conf import parse_config_file
from gunicorn_cert_exporter.sources.gunicorn_settings import Learned, Problem, gunicorn_args, learn, parse_args
from tests.support import gunicorn_python

DEMO_APP = Path(__file__).resolve().parents[1] / "gunicorn_cert_exporter" / "demo_app.py"


def _learn(cmdline: list[str], files: dict[str, bytes], *, env: str | None = None, cwd: str = "/srv/app") -> Learned:
    return learn(cmdline=cmdline, environment=env, cwd=cwd, read_config=files.get)


def test_every_option_discovery_needs_is_read_in_each_of_its_spellings() -> None:
    settings = parse_args(
        [
            "--certfile",
            "c.pem",
            "--keyfile=k.pem",
            "-b",
            "127.0.0.1:8443",
            "--bind=[::1]:8443",
            "-b0.0.0.0:9443",
            "-p",
            "app.pid",
            "-kgevent",
            "-n",
            "api",
            "--chdir",
            "/srv",
            "-u",
            "nobody",
            "--group=nogroup",
            "--ca-certs",
            "ca.pem",
            "--control-socket",
            "g.ctl",
            "--initgroups",
            "-c",
            "file:conf.py",
            "app:app",
        ]
    )
    assert settings.certfile == "c.pem" and settings.keyfile == "k.pem"
    assert settings.bind == ("127.0.0.1:8443", "[::1]:8443", "0.0.0.0:9443")
    assert (settings.pidfile, settings.worker_class, settings.proc_name) == ("app.pid", "gevent", "api")
    assert (settings.chdir, settings.user, settings.group, settings.initgroups) == ("/srv", "nobody", "nogroup", True)
    assert (settings.ca_certs, settings.control_socket, settings.config) == ("ca.pem", "g.ctl", "file:conf.py")


def test_the_values_of_options_discovery_does_not_need_never_shift_the_others() -> None:
    settings = parse_args(["-w", "4", "--threads", "2", "--timeout", "30", "app:app", "--certfile", "c.pem"])
    assert settings.certfile == "c.pem" and settings.bind is None


def test_the_arguments_are_found_behind_every_way_of_starting_gunicorn() -> None:
    args = ("--certfile", "c.pem", "app:app")
    assert gunicorn_args(["/venv/bin/gunicorn", *args]) == args
    assert gunicorn_args(["/usr/bin/python3", "-m", "gunicorn", *args]) == args
    assert gunicorn_args(["python3", "-u", "-X", "dev", "/venv/bin/gunicorn", *args]) == args
    assert gunicorn_args(["python3.11", "/venv/lib/site-packages/gunicorn/__main__.py", *args]) == args  # USR2
    assert gunicorn_args(["gunicorn: master [api]"]) is None  # setproctitle hides them


def test_command_line_beats_environment_beats_config_file() -> None:
    conf = b'certfile = "conf-cert.pem"\nkeyfile = "conf-key.pem"\nbind = ["127.0.0.1:9001"]\nproc_name = "conf"\n'
    learned = _learn(
        ["gunicorn", "--certfile", "cli-cert.pem", "app:wsgi_app"],
        {"/srv/app/gunicorn.conf.py": conf},
        env="--certfile env-cert.pem --keyfile env-key.pem -n env",
    )
    assert learned.problem is None and learned.config_file == "/srv/app/gunicorn.conf.py"
    assert learned.settings.certfile == "/srv/app/cli-cert.pem"
    assert learned.settings.keyfile == "/srv/app/env-key.pem"
    assert learned.settings.bind == ("127.0.0.1:9001",)
    assert learned.settings.proc_name == "env"


def test_the_environment_may_name_the_config_file_when_the_command_line_does_not() -> None:
    files = {"/etc/gunicorn/api.py": b'certfile = "/etc/tls/c.pem"\nkeyfile = "/etc/tls/k.pem"\n'}
    learned = _learn(["gunicorn", "app:app"], files, env="-c /etc/gunicorn/api.py")
    assert (learned.settings.certfile, learned.settings.keyfile) == ("/etc/tls/c.pem", "/etc/tls/k.pem")


@pytest.mark.parametrize(
    "source",
    [
        b'import os\ncertfile = os.environ["CERT"]\nkeyfile = "k.pem"\n',
        b'keyfile = "k.pem"\nif True:\n    certfile = "a.pem"\n',
        b'from settings import *\nkeyfile = "k.pem"\n',
        b'keyfile = "k.pem"\nexec("certfile = 1")\n',
        b'keyfile = "k.pem"\ncertfile = "a.pem"\ncertfile = "b.pem"\n',
        b'keyfile = "k.pem"\ndef certfile(): pass\n',
        b'keyfile = "k.pem"\nfrom tls import certfile\n',
        b'keyfile = "k.pem"\ncertfile: str = "a" + "b"\n',
        b'keyfile = "k.pem"\ndef f():\n    global certfile\n    certfile = "x"\nf()\ncertfile = "a.pem"\n',
    ],
)
def test_a_computed_certfile_is_reported_never_guessed(source: bytes) -> None:
    learned = _learn(["gunicorn", "app:app"], {"/srv/app/gunicorn.conf.py": source})
    assert learned.problem is Problem.CONFIG_NOT_LITERAL
    assert learned.config_file == "/srv/app/gunicorn.conf.py" and "certfile" in learned.detail


def test_a_literal_setting_beside_code_is_read() -> None:
    source = (
        b'import multiprocessing\nworkers = multiprocessing.cpu_count() * 2\ncertfile = "c.pem"\nkeyfile = "k.pem"\n'
    )
    learned = _learn(["gunicorn", "app:app"], {"/srv/app/gunicorn.conf.py": source})
    assert learned.problem is None and learned.settings.certfile == "/srv/app/c.pem"


def test_a_python_module_config_is_not_literal_unless_the_files_are_named_elsewhere() -> None:
    learned = _learn(["gunicorn", "-c", "python:deploy.conf", "app:app"], {})
    assert learned.problem is Problem.CONFIG_NOT_LITERAL
    told = _learn(["gunicorn", "-c", "python:deploy.conf", "--certfile", "c", "--keyfile", "k", "app:app"], {})
    assert told.problem is None and told.settings.certfile == "/srv/app/c"


def test_the_config_file_is_parsed_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    source = f'open({str(marker)!r}, "w").write("ran")\ncertfile = "c.pem"\nkeyfile = "k.pem"\n'.encode()
    learned = _learn(["gunicorn", "app:app"], {"/srv/app/gunicorn.conf.py": source})
    assert learned.settings.certfile == "/srv/app/c.pem"
    assert not marker.exists()


def test_a_relative_config_after_chdir_is_never_read_from_the_new_directory() -> None:
    files = {"/srv/app/gunicorn.conf.py": b'certfile = "wrong.pem"\nkeyfile = "wrong.pem"\n'}
    learned = _learn(["gunicorn", "--chdir", "/srv/app", "app:app"], files)
    assert learned.problem is Problem.CONFIG_LOCATION_UNKNOWN and learned.settings.certfile is None
    relative = _learn(["gunicorn", "--chdir", "/srv/app", "-c", "conf/g.py", "app:app"], files)
    assert relative.problem is Problem.CONFIG_LOCATION_UNKNOWN
    named = _learn(["gunicorn", "--chdir", "/srv/app", "--certfile", "c", "--keyfile", "k", "app:app"], files)
    assert named.problem is None and named.settings.certfile == "/srv/app/c"


def test_a_config_found_here_that_moves_gunicorn_elsewhere_is_not_the_one_it_read() -> None:
    files = {"/srv/app/gunicorn.conf.py": b'chdir = "/opt/other"\ncertfile = "c.pem"\nkeyfile = "k.pem"\n'}
    learned = _learn(["gunicorn", "app:app"], files)
    assert learned.problem is Problem.CONFIG_LOCATION_UNKNOWN


def test_no_config_file_and_no_certfile_is_a_plain_master_not_a_problem() -> None:
    learned = _learn(["gunicorn", "-b", "127.0.0.1:8000", "app:app"], {})
    assert learned.problem is None and learned.settings.certfile is None


def test_unparsable_environment_is_its_own_problem() -> None:
    learned = _learn(["gunicorn", "app:app"], {}, env="--certfile 'unterminated")
    assert learned.problem is Problem.ARGS_UNREADABLE


def test_bind_as_a_string_and_user_as_a_number_are_read_as_gunicorn_reads_them() -> None:
    parsed = parse_config_file(b'bind = "127.0.0.1:8443"\nuser = 65534\nproc_name = "api"\n')
    assert parsed.settings.bind == ("127.0.0.1:8443",)
    assert parsed.settings.user == "65534" and parsed.settings.proc_name == "api"
    assert "bind" not in parsed.computed


@pytest.mark.integration
@pytest.mark.parametrize("version", ["20.1.0", "27.0.1"])
def test_the_precedence_equals_gunicorns_own_print_config(tmp_path: Path, version: str) -> None:
    """Gunicorn's own --print-config and this reader agree, with all three sources in play."""
    python = gunicorn_python(version)
    (tmp_path / "gunicorn.conf.py").write_text(
        'certfile = "conf-cert.pem"\nkeyfile = "conf-key.pem"\nbind = ["127.0.0.1:9001"]\nproc_name = "conf"\n'
        'pidfile = "conf.pid"\n'
    )
    (tmp_path / "app.py").write_bytes(DEMO_APP.read_bytes())
    env_args = "--certfile env-cert.pem --keyfile env-key.pem -n env"
    cmdline = [str(python), str(python.parent / "gunicorn"), "--certfile", "cli-cert.pem", "app:wsgi_app"]
    env = {**os.environ, "GUNICORN_CMD_ARGS": env_args}
    printed = subprocess.run(
        [*cmdline[:2], "--print-config", *cmdline[2:]],
        check=True,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    said = {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in printed.stdout.splitlines()) if v}
    learned = learn(cmdline=cmdline, environment=env_args, cwd=str(tmp_path), read_config=_reader)
    assert learned.problem is None
    for name in ("certfile", "keyfile", "pidfile"):
        assert getattr(learned.settings, name) == str(tmp_path / said[name]), name
    assert learned.settings.proc_name == said["proc_name"]
    assert list(learned.settings.bind or ()) == ast.literal_eval(said["bind"])  # Gunicorn prints a list literal


def _reader(path: str) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return None


def test_a_master_whose_title_hides_its_command_line_is_never_guessed_from_its_cwd() -> None:
    files = {"/srv/app/gunicorn.conf.py": b'certfile = "c.pem"\nkeyfile = "k.pem"\n'}
    learned = _learn(["gunicorn: master [api]"], files, env="--certfile e.pem --keyfile e.pem")
    assert learned.problem is Problem.CMDLINE_HIDDEN and learned.settings.certfile is None
