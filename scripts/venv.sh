# shellcheck shell=bash
# Sourced by scripts/install and scripts/test: build (or reuse) the project's own virtual environment, so
# nothing is installed into the system Python (which on stock Debian 12 / Ubuntu 24.04 has no pip, or refuses
# installs under PEP 668).
#
#   venv_ensure EXTRAS CONSTRAINTS   e.g. venv_ensure test,demo requirements/dev.txt
#
# The environment is .venv (or $GCE_VENV). It is rebuilt only when the pins, pyproject.toml or the extras
# changed since the last install: a second run costs a checksum.

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {  # Debian packages, installed only by name, quietly; apt-get update first (a fresh machine's lists are empty)
    echo "installing Debian packages: $*"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

venv_ensure() {
    local extras=$1 constraints=$2
    local venv=${GCE_VENV:-.venv} python=${PYTHON:-python3}
    if ! command -v "$python" >/dev/null 2>&1; then
        apt_install python3 python3-venv
    fi
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
        echo "gunicorn-cert-exporter needs Python 3.10 or newer; $python is $("$python" --version 2>&1)" >&2
        return 1
    fi
    if [ ! -x "$venv/bin/python" ] && ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
        apt_install python3-venv  # Debian and Ubuntu ship venv's ensurepip separately
    fi
    local stamp
    stamp="$(cat pyproject.toml requirements/*.txt | sha256sum | cut -c1-64) $extras"
    if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.installed" 2>/dev/null)" = "$stamp" ]; then
        return 0
    fi
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    echo "installing gunicorn-cert-exporter[$extras] into $venv (pinned by $constraints)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -c "$constraints" -e ".[$extras]"
    echo "$stamp" >"$venv/.installed"
}
