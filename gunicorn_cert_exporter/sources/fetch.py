"""Bounded HTTP(S) requests to outside URLs: a size cap, a total time cap, re-checked redirects, an address allow-list.

Every request resolves the host once, checks each address against the allow-list (private, loopback, link-local
and other non-global addresses are refused unless listed) and connects to the checked address itself: no second
resolution, so a DNS answer that changes between the check and the connection (rebinding) can't reach anything
else. A ``Retry-After`` a server sent is kept per URL and honoured: the URL is not asked again before then. The
result is always a value (``Fetched``) with a reason on failure; a request never raises.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from fnmatch import fnmatchcase
from urllib.parse import urljoin, urlsplit

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]
"""Return the IP addresses a host name resolves to (raise OSError when it does not)."""

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_LONGEST_RETRY_AFTER = 86400.0  # a server's Retry-After beyond a day is read as a day
_MAX_REMEMBERED = 10_000


class FetchReason(str, Enum):
    """Why a request gave no usable answer (the ``reason`` label)."""

    BAD_URL = "bad_url"  # not http(s), no host, or a malformed port
    DNS_FAILURE = "dns_failure"
    REFUSED_ADDRESS = "refused_address"  # a private, loopback or link-local address that ``allow`` does not list
    CONNECT_FAILED = "connect_failed"
    TLS_ERROR = "tls_error"
    TIMEOUT = "timeout"
    TOO_LARGE = "too_large"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    HTTP_STATUS = "http_status"  # an answer other than 2xx
    RETRY_LATER = "retry_later"  # the server's Retry-After for this URL has not passed: not asked
    PARSE_ERROR = "parse_error"  # for callers: the body did not parse as expected
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class FetchLimits:
    """What one request may cost and reach."""

    timeout: float = 10.0  # the whole request, redirects included
    max_size: int = 1024 * 1024
    max_redirects: int = 3
    allow: tuple[str, ...] = ()  # host names (globs) and IPs/CIDRs that may be private, loopback or link-local


@dataclass(frozen=True, slots=True)
class Fetched:
    """The answer to one request, or why there is none."""

    url: str  # the URL that answered (after redirects)
    status: int = 0
    body: bytes = b""
    content_type: str = ""
    retry_after: float | None = None  # when the server asks to be asked again (epoch seconds)
    location: str = ""  # a redirect's target, as sent
    error: FetchReason | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        """Tell whether a 2xx answer arrived whole."""
        return self.error is None


def resolve(host: str, port: int) -> list[str]:
    """Resolve a host name with the system resolver: every address, IPv4 and IPv6."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def permitted(host: str, ip: IP, allow: Sequence[str]) -> bool:
    """Tell whether an address may be reached: any global address, others only when ``allow`` lists them."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback
    if ip.is_global and not ip.is_multicast:
        return True
    for entry in allow:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            if fnmatchcase(host.lower().rstrip("."), entry.lower()):
                return True
    return False


def retry_after(value: str | None, *, now: float) -> float | None:
    """Read a Retry-After header (seconds or an HTTP date) as epoch seconds, at most a day ahead."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return now + min(float(value), _LONGEST_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return min(max(when, now), now + _LONGEST_RETRY_AFTER)


class _FetchError(Exception):
    """One request's failure, carried up to ``Fetcher.request`` and turned into a value there."""

    def __init__(self, reason: FetchReason, detail: str = "") -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to an address checked beforehand; the Host header keeps the URL's name."""

    def __init__(self, host: str, port: int, *, ip: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._ip = ip
        self.raw: socket.socket | None = None  # kept after http.client lets go of it (an answer that closes)

    def connect(self) -> None:
        """Connect to the checked address, never to a fresh resolution of the name."""
        self.sock = self.raw = socket.create_connection((self._ip, self.port), self.timeout)


class _PinnedHTTPS(_PinnedHTTP):
    """An HTTPS connection to a checked address, verifying the certificate for the URL's name."""

    def __init__(self, host: str, port: int, *, ip: str, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, ip=ip, timeout=timeout)
        self._tls = context

    def connect(self) -> None:
        """Connect to the checked address, then handshake for the URL's host name."""
        super().connect()
        self.sock = self.raw = self._tls.wrap_socket(self.sock, server_hostname=self.host)


class Fetcher:
    """Make bounded requests and remember each URL's Retry-After; thread-safe."""

    def __init__(
        self,
        *,
        limits: FetchLimits,
        resolver: Resolver = resolve,
        clock: Callable[[], float] = time.time,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.limits = limits
        self._resolve = resolver
        self._clock = clock
        self._tls = tls or ssl.create_default_context()
        self._lock = threading.Lock()
        self._later: dict[str, float] = {}

    def not_before(self, url: str) -> float | None:
        """Return when the server asked to be asked again about ``url`` (epoch seconds), if it did."""
        with self._lock:
            return self._later.get(url)

    def get(self, url: str, *, headers: dict[str, str] | None = None) -> Fetched:
        """GET a URL within the limits."""
        return self.request("GET", url, headers=headers)

    def post(self, url: str, body: bytes, *, content_type: str) -> Fetched:
        """POST a body to a URL within the limits."""
        return self.request("POST", url, body=body, headers={"Content-Type": content_type})

    def request(
        self, method: str, url: str, *, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Fetched:
        """Make one request, following at most ``max_redirects`` redirects, each checked like the first URL."""
        now = self._clock()
        later = self.not_before(url)
        if later is not None and now < later:
            return Fetched(url, retry_after=later, error=FetchReason.RETRY_LATER, detail="Retry-After not passed")
        deadline = time.monotonic() + self.limits.timeout
        current = url
        try:
            for _ in range(self.limits.max_redirects + 1):
                answer = self._once(method, current, body, headers or {}, deadline)
                if not answer.location:
                    return self._remember(url, answer)
                current = urljoin(current, answer.location)
                if answer.status == 303 or (answer.status in (301, 302) and method == "POST"):
                    method, body = "GET", None
            return Fetched(
                current, error=FetchReason.TOO_MANY_REDIRECTS, detail=f"more than {self.limits.max_redirects}"
            )
        except _FetchError as failed:
            return Fetched(current, error=failed.reason, detail=failed.detail)

    def _remember(self, url: str, answer: Fetched) -> Fetched:
        if answer.retry_after is not None:
            with self._lock:
                self._later[url] = answer.retry_after
                if len(self._later) > _MAX_REMEMBERED:  # URLs come from the certificates seen: forget what passed
                    now = self._clock()
                    self._later = {u: t for u, t in self._later.items() if t > now}
        if not 200 <= answer.status < 300:
            return Fetched(
                answer.url,
                status=answer.status,
                retry_after=answer.retry_after,
                error=FetchReason.HTTP_STATUS,
                detail=f"HTTP {answer.status}",
            )
        return answer

    def _address(self, url: str) -> tuple[str, str, int, str, str]:
        """Check a URL and pick the address to connect to: (scheme, host, port, path, ip)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise _FetchError(FetchReason.BAD_URL, "malformed URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _FetchError(FetchReason.BAD_URL, "only http:// and https:// URLs with a host")
        host = parts.hostname
        port = port or (443 if parts.scheme == "https" else 80)
        try:
            literal: IP | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        try:
            candidates = [str(literal)] if literal is not None else list(self._resolve(host, port))
        except (OSError, UnicodeError):
            raise _FetchError(FetchReason.DNS_FAILURE, f"{host} does not resolve") from None
        for candidate in candidates:
            try:
                ip = ipaddress.ip_address(candidate.split("%")[0])
            except ValueError:
                continue
            if permitted(host, ip, self.limits.allow):
                path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                return parts.scheme, host, port, path, candidate
        raise _FetchError(FetchReason.REFUSED_ADDRESS, f"{host}: no address the allow-list permits")

    def _once(self, method: str, url: str, body: bytes | None, headers: dict[str, str], deadline: float) -> Fetched:
        """One request and its answer (a redirect's with its Location)."""
        scheme, host, port, path, ip = self._address(url)
        left = deadline - time.monotonic()
        if left <= 0:
            raise _FetchError(FetchReason.TIMEOUT, "time cap reached")
        conn: _PinnedHTTP = (
            _PinnedHTTPS(host, port, ip=ip, timeout=left, context=self._tls)
            if scheme == "https"
            else _PinnedHTTP(host, port, ip=ip, timeout=left)
        )
        # A hard cap on the whole exchange: a server dripping bytes resets each read's timeout, never this one.
        cutoff = threading.Timer(left, _cut, (conn,))
        cutoff.daemon = True
        cutoff.start()
        try:
            return self._exchange(conn, method, url, path, body, headers, deadline)
        except _FetchError:
            raise
        except ssl.SSLError as exc:
            raise _FetchError(_late(deadline) or FetchReason.TLS_ERROR, exc.reason or "TLS error") from None
        except TimeoutError:
            raise _FetchError(FetchReason.TIMEOUT, "time cap reached") from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            reason = _late(deadline) or (FetchReason.CONNECT_FAILED if conn.sock is None else FetchReason.ERROR)
            raise _FetchError(reason, type(exc).__name__) from None
        finally:
            cutoff.cancel()
            conn.close()

    def _exchange(  # noqa: PLR0917  (one request's parts, passed once from _once)
        self,
        conn: _PinnedHTTP,
        method: str,
        url: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        deadline: float,
    ) -> Fetched:
        conn.request(method, path, body=body, headers={"User-Agent": "gunicorn-cert-exporter", **headers})
        response = conn.getresponse()
        later = retry_after(response.getheader("Retry-After"), now=self._clock())
        if response.status in _REDIRECTS:
            return Fetched(url, status=response.status, location=response.getheader("Location") or "")
        declared = response.getheader("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.limits.max_size:
            raise _FetchError(FetchReason.TOO_LARGE, f"Content-Length {declared}")
        chunks: list[bytes] = []
        size = 0
        while chunk := response.read1(64 * 1024):
            size += len(chunk)
            if size > self.limits.max_size:
                raise _FetchError(FetchReason.TOO_LARGE, f"more than {self.limits.max_size} bytes")
            chunks.append(chunk)
            if time.monotonic() >= deadline:
                raise _FetchError(FetchReason.TIMEOUT, "time cap reached")
        if time.monotonic() >= deadline:  # the cap cut the connection: what arrived is not the whole answer
            raise _FetchError(FetchReason.TIMEOUT, "time cap reached")
        return Fetched(
            url,
            status=response.status,
            body=b"".join(chunks),
            content_type=response.getheader("Content-Type") or "",
            retry_after=later,
        )


def _cut(conn: _PinnedHTTP) -> None:
    """End a connection from another thread: shutdown() wakes a blocked read, where close() would not."""
    sock = conn.raw
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _late(deadline: float) -> FetchReason | None:
    """Say TIMEOUT when the time cap closed the connection under a read (the error then is only a symptom)."""
    return FetchReason.TIMEOUT if time.monotonic() >= deadline else None
