"""Basic auth for every route: aiohttp decodes the header, bcrypt checks run in a bounded pool, the rest get 429."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from gunicorn_cert_exporter.web.connections import Refusals
from gunicorn_cert_exporter.web.pools import Slots
from gunicorn_cert_exporter.web.webconfig import BasicAuth


def credentials(header: str) -> tuple[str, str]:
    """Return the user and password of an ``Authorization: Basic`` header; empty strings when there are none.

    Missing or malformed credentials still get a full check (of the empty user, against the dummy hash), so they
    cost what an unknown user does.
    """
    try:
        decoded = aiohttp.BasicAuth.decode(header, encoding="utf-8")
    except ValueError:  # no header, another scheme, bad base64, no colon, not UTF-8
        return "", ""
    return decoded.login, decoded.password


class Authorizer:
    """Answer 401 or 429 to a request without valid credentials; None lets it through."""

    def __init__(self, auth: BasicAuth, *, checks: int, refusals: Refusals) -> None:
        self._auth, self._refusals = auth, refusals
        self._bcrypt = Slots(checks, name="bcrypt")

    async def refusal(self, request: web.Request) -> web.Response | None:
        """Check the request's credentials: cheaply if they passed before, else with bcrypt in a bounded pool."""
        if not self._auth.enabled:
            return None
        user, password = credentials(request.headers.get("Authorization", ""))
        if self._auth.remembered(user, password):
            return None
        if self._bcrypt.full:  # bcrypt is slow on purpose: never queue it unboundedly
            self._refusals.add("auth_busy")
            return web.Response(status=429, text="too many authentication attempts\n", headers={"Retry-After": "1"})
        if await self._bcrypt.run(lambda: self._auth.check(user, password)):
            return None
        return web.Response(status=401, text="unauthorized\n", headers={"WWW-Authenticate": 'Basic realm="exporter"'})

    def close(self) -> None:
        """Stop the bcrypt threads."""
        self._bcrypt.close()
