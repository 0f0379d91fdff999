"""The application Gunicorn serves in the demo (and in the tests): every request answers 'ok'.

``/status/NNN`` answers with that status instead (a health path that fails, for the reload's health check).

Kept apart from demo.py so that a Gunicorn worker importing it loads nothing of the exporter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]


async def asgi_app(
    scope: Scope, receive: Callable[[], Awaitable[Scope]], send: Callable[[Scope], Awaitable[None]]
) -> None:
    """Answer every request with 'ok' (the app Gunicorn serves in the demo and the tests)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    status = _status(scope.get("path", "/"))
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok\n"})


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """Answer every request with 'ok' (for the WSGI worker classes)."""
    status = _status(environ.get("PATH_INFO", "/"))
    start_response(f"{status} {'OK' if status < 400 else 'Not OK'}", [("Content-Type", "text/plain")])
    return [b"ok\n"]


def _status(path: str) -> int:
    prefix, _, code = path.rpartition("/")
    return int(code) if prefix == "/status" and code.isdigit() and 200 <= int(code) <= 599 else 200
