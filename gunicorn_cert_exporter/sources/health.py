"""The service's own health after a reload: one HTTPS GET of a path through the target's endpoint, bounded.

Verified against the target's ``ca_file`` when it has one (else not verified: the exporter's question is whether
the service answers, and the served certificate is checked by the probe), with the SNI the endpoint is probed with.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from dataclasses import dataclass

from gunicorn_cert_exporter.config_runbook import Expect

__all__ = ["Expect", "Health", "get_health"]  # Expect is a config word: it lives in config_runbook

_BODY_CAP = 64 * 1024  # read and dropped: a health answer is short, and an endless one must not hold the reload


class _Connection(http.client.HTTPSConnection):
    """An HTTPS connection to one address that sends the probe's SNI, not the address, as server name."""

    def __init__(
        self, host: str, port: int, *, timeout: float, context: ssl.SSLContext, server_name: str | None
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._context_for_sni = context
        self._sni = server_name

    def connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), self.timeout)
        try:
            self.sock = self._context_for_sni.wrap_socket(raw, server_hostname=self._sni)
        except BaseException:
            raw.close()
            raise


@dataclass(frozen=True, slots=True)
class Health:
    """What the health path answered: the status (0 when nothing came back) and whether it is in range."""

    healthy: bool
    status: int = 0
    detail: str = ""


def get_health(
    *,
    host: str,
    port: int,
    path: str,
    expect: Expect,
    server_name: str | None,
    ca_file: str | None,
    timeout: float,
) -> Health:
    """GET ``path`` over TLS from host:port; never raises."""
    context = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    if ca_file is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif server_name is None:
        context.check_hostname = False  # an IP-literal endpoint with no server_name: the chain is still verified
    connection = _Connection(host, port, timeout=timeout, context=context, server_name=server_name)
    try:
        connection.request("GET", path, headers={"Host": server_name or host, "User-Agent": "gunicorn-cert-exporter"})
        response = connection.getresponse()
        response.read(_BODY_CAP)
    except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
        kind = "timeout" if isinstance(exc, (TimeoutError, socket.timeout)) else type(exc).__name__
        return Health(healthy=False, detail=f"GET {path}: {kind}: {str(exc)[:160]}")
    finally:
        connection.close()
    healthy = expect.low <= response.status <= expect.high
    return Health(healthy=healthy, status=response.status, detail=f"GET {path}: {response.status} (expect {expect})")
