"""Test helpers, one module per concern; every public name is re-exported here (``from tests.support import X``).

- ``pki``: certificates with explicit validity dates (``PKI``, ``Issued``), the files they are written to.
- ``tls``: real TLS (or deliberately broken) servers on loopback (``TLSServer``, ``server_context``).
- ``exporter``: a running exporter in this process (``start_exporter``) or as a ``serve`` process.
- ``gunicorn``: a real Gunicorn child (``Gunicorn``), and ``FakeGunicorn`` that only looks like one.
- ``versions``: the Gunicorn version suite (``Cell``, ``rotate_under``).
- ``processes``: /proc reads, graceful stops, free ports, work done as nobody.
- ``browser``: a headless Chromium over DevTools.  ``control``: Unix socket servers (a fake control socket).
- ``waiting``: ``eventually(condition)``.  ``tools``: external tools, skipped locally and required under CI.
- ``files``: deep trees and one scan of some paths.  ``serving``: servers in a thread that stop within ``POLL``.
"""

from tests.support.browser import CHROMIUM_FLAGS, Chromium
from tests.support.control import ControlServer, UnixServer
from tests.support.exporter import ExporterProcess, RunningExporter, StartExporter, parse_samples, start_exporter
from tests.support.files import deep_tree, remove_tree, scan_paths
from tests.support.gunicorn import START_SLACK, FakeGunicorn, Gunicorn, after_start_of, newest_start
from tests.support.pki import (
    DAY,
    ISSUING_CA,
    LIFETIMES,
    NOW,
    PKI,
    Issued,
    lifetime_files,
    pkcs12_of,
    write_chain,
    write_pair,
)
from tests.support.processes import alive, as_nobody, children, free_port, proc_stat, searchable_by, stop_process
from tests.support.serving import POLL, serve_in_thread
from tests.support.tls import TLSServer, ipv6_available, server_context
from tests.support.tools import REPO, require_tool, unavailable
from tests.support.versions import (
    GUNICORN_ENVS,
    GUNICORN_PINS,
    WORKER_CLASSES,
    Cell,
    Rotation,
    gunicorn_python,
    gunicorn_versions,
    rotate_under,
    version_tuple,
)
from tests.support.waiting import eventually, finishes, wait_until

__all__ = [
    "CHROMIUM_FLAGS",
    "DAY",
    "GUNICORN_ENVS",
    "GUNICORN_PINS",
    "ISSUING_CA",
    "LIFETIMES",
    "NOW",
    "PKI",
    "POLL",
    "REPO",
    "START_SLACK",
    "WORKER_CLASSES",
    "Cell",
    "Chromium",
    "ControlServer",
    "ExporterProcess",
    "FakeGunicorn",
    "Gunicorn",
    "Issued",
    "Rotation",
    "RunningExporter",
    "StartExporter",
    "TLSServer",
    "UnixServer",
    "after_start_of",
    "alive",
    "as_nobody",
    "children",
    "deep_tree",
    "eventually",
    "finishes",
    "free_port",
    "gunicorn_python",
    "gunicorn_versions",
    "ipv6_available",
    "lifetime_files",
    "newest_start",
    "parse_samples",
    "pkcs12_of",
    "proc_stat",
    "remove_tree",
    "require_tool",
    "rotate_under",
    "scan_paths",
    "searchable_by",
    "serve_in_thread",
    "server_context",
    "start_exporter",
    "stop_process",
    "unavailable",
    "version_tuple",
    "wait_until",
    "write_chain",
    "write_pair",
]
