"""Servers run in a background thread, stopped within ``POLL`` seconds (not the standard library's half second)."""

from __future__ import annotations

import socketserver
import threading

POLL = 0.05  # how often a server thread looks whether it was told to stop: every test's teardown waits for it


def serve_in_thread(server: socketserver.BaseServer) -> threading.Thread:
    """Serve ``server`` from a daemon thread until its ``shutdown()``, which then returns within ``POLL``."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": POLL}, daemon=True)
    thread.start()
    return thread
