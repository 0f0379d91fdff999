"""Endpoints to EndpointResults: resolve every address, connect, handshake once, read the served chain."""

from __future__ import annotations

import errno
import os
import socket
import ssl
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from gunicorn_cert_exporter.config import EndpointConfig
from gunicorn_cert_exporter.config_values import split_host_port
from gunicorn_cert_exporter.model import AddressResult, EndpointReason, EndpointResult, VerifyReason, down_at
from gunicorn_cert_exporter.sources import certs, starttls

Resolver = Callable[[str, int], Sequence[tuple[int, str]]]
"""host, port -> [(address family, IP literal), ...]; raises OSError when the name does not resolve."""

_Stamp = tuple[int, int, int, int]
"""device, inode, size, mtime: what tells that a file behind a context may have changed."""

MAX_CONTEXTS = 128
"""Client TLS contexts kept at most (one per distinct ca_file/client_cert/client_key set)."""

_ENCODING_DER = 2  # _ssl.ENCODING_DER, stable since Python 3.10
_PLAINTEXT_REASONS = frozenset(
    {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL", "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE"}
)
_VERIFY_CODES = {
    9: VerifyReason.NOT_YET_VALID,
    10: VerifyReason.EXPIRED,
    18: VerifyReason.SELF_SIGNED,
    19: VerifyReason.UNKNOWN_CA,  # a root was served but is not trusted
    23: VerifyReason.REVOKED,
    62: VerifyReason.HOSTNAME_MISMATCH,
    64: VerifyReason.HOSTNAME_MISMATCH,  # IP address mismatch
}
_MISSING_ISSUER_CODES = frozenset({2, 20, 21})


def system_resolver(host: str, port: int) -> list[tuple[int, str]]:
    """Resolve with getaddrinfo, every distinct address once, in the resolver's order."""
    seen: dict[str, int] = {}
    for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        if family in (socket.AF_INET, socket.AF_INET6):
            seen.setdefault(str(sockaddr[0]), family)
    return [(family, address) for address, family in seen.items()]


@dataclass(frozen=True, slots=True)
class _Attempt:
    config: EndpointConfig
    host: str
    port: int
    family: int
    address: str


class Prober:
    """Probe TLS endpoints with bounded concurrency; one stalled address costs its own timeout only."""

    def __init__(
        self,
        *,
        resolver: Resolver = system_resolver,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolver = resolver
        self._clock = clock
        self._contexts: OrderedDict[tuple[str, ...], tuple[tuple[_Stamp, ...], ssl.SSLContext]] = OrderedDict()
        self._facts = certs.FactsCache()
        self._lock = threading.Lock()
        self._tracked: frozenset[tuple[str, str]] = frozenset()
        self._last_resolved: dict[tuple[str, str], tuple[str, ...]] = {}
        self._resolved_lock = threading.Lock()

    def track(
        self, configs: Iterable[EndpointConfig], *, known: Mapping[tuple[str, str], tuple[str, ...]] | None = None
    ) -> None:
        """Remember the addresses of these endpoints (the config's), and forget those of every other.

        While a tracked endpoint's name does not resolve, the addresses it last resolved to are reported down with
        ``dns_failure``, so their series stay. Only tracked endpoints are remembered (never a ``/probe`` target):
        the memory is bounded by the config. ``known`` (endpoint, server_name) -> addresses fills in what this
        prober has not seen itself (a new probe process, from what the exporter last published).
        """
        keys = frozenset(series_key(config) for config in configs)
        with self._resolved_lock:
            self._tracked = keys
            seen = {**(known or {}), **self._last_resolved}
            self._last_resolved = {k: v for k, v in seen.items() if k in keys and v}

    def probe_all(self, configs: Sequence[EndpointConfig], *, concurrency: int) -> tuple[EndpointResult, ...]:
        """Resolve every endpoint, then probe every address, all at most ``concurrency`` at a time."""
        if not configs:
            return ()
        pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="probe")
        try:
            resolved = [pool.submit(self._resolve, c) for c in configs]
            started = time.monotonic()  # one deadline per endpoint from the start: stalled resolvers don't add up
            plans = []
            for config, future in zip(configs, resolved, strict=True):
                try:
                    plans.append(future.result(timeout=max(started + config.timeout - time.monotonic(), 0.0)))
                except FutureTimeout:
                    plans.append((config, EndpointReason.DNS_FAILURE, "resolver timed out", []))
            futures = [[pool.submit(self.probe_address, a) for a in attempts] for *_, attempts in plans]
            return tuple(
                self._result(config, error, detail, tuple(f.result() for f in pending))
                for (config, error, detail, _), pending in zip(plans, futures, strict=True)
            )
        finally:
            # Not `with`: leaving it would join a resolver thread stuck past its deadline (getaddrinfo can't be
            # interrupted), and one stalled lookup would hold the whole scan. Every probe has ended by now.
            pool.shutdown(wait=False, cancel_futures=True)

    def probe(self, config: EndpointConfig) -> EndpointResult:
        """Probe one endpoint on all its addresses."""
        return self.probe_all([config], concurrency=8)[0]

    def _result(
        self,
        config: EndpointConfig,
        error: EndpointReason | None,
        detail: str,
        addresses: tuple[AddressResult, ...],
    ) -> EndpointResult:
        """Remember where a tracked endpoint resolved to; when it did not resolve, report those addresses down."""
        key = series_key(config)
        with self._resolved_lock:
            if key in self._tracked:
                if error is None:
                    self._last_resolved[key] = tuple(a.address for a in addresses)
                else:
                    addresses = down_at(self._last_resolved.get(key, ()), error, detail)
        return EndpointResult(
            endpoint=config.address, server_name=config.sni or "", addresses=addresses, error=error, detail=detail
        )

    def _resolve(self, config: EndpointConfig) -> tuple[EndpointConfig, EndpointReason | None, str, list[_Attempt]]:
        host, port = split_host_port(config.address)
        try:
            found = self._resolver(host, port)
        except (OSError, UnicodeError) as exc:
            return config, EndpointReason.DNS_FAILURE, _short(exc), []
        if not found:
            return config, EndpointReason.DNS_FAILURE, "no address", []
        return config, None, "", [_Attempt(config, host, port, family, ip) for family, ip in found]

    def probe_address(self, attempt: _Attempt) -> AddressResult:
        """Connect to one address and complete (or fail) one TLS handshake."""
        config = attempt.config
        started = self._clock()
        deadline = started + config.timeout
        context = self._context(config)
        if isinstance(context, tuple):
            return _failure(attempt, *context)
        sock = socket.socket(attempt.family, socket.SOCK_STREAM)
        try:
            sock.settimeout(config.timeout)
            try:
                sock.connect((attempt.address, attempt.port))
            except OSError as exc:
                return _failure(attempt, _connect_reason(exc), _short(exc))
            if config.starttls:
                try:
                    starttls.PROTOCOLS[config.starttls](sock, lambda: deadline - self._clock())
                except (starttls.StartTLSError, OSError) as exc:
                    reason = EndpointReason.STALLED if isinstance(exc, TimeoutError) else None
                    return _failure(attempt, reason or EndpointReason.STARTTLS_FAILED, _short(exc))
            sock.settimeout(max(deadline - self._clock(), 0.001))
            return self._handshake(attempt, context, sock, started)
        finally:
            sock.close()

    def _handshake(
        self, attempt: _Attempt, context: ssl.SSLContext, sock: socket.socket, started: float
    ) -> AddressResult:
        name = attempt.config.sni or attempt.host
        tls = context.wrap_socket(sock, server_hostname=name, do_handshake_on_connect=False)
        verify_error: VerifyReason | None = None
        verify_code = 0
        try:
            tls.do_handshake()
        except ssl.SSLCertVerificationError as exc:
            verify_code = exc.verify_code
        except TimeoutError as exc:
            return _failure(attempt, EndpointReason.STALLED, _short(exc) or "handshake timed out")
        except ssl.SSLError as exc:
            return _failure(attempt, _tls_reason(exc), _short(exc))
        except OSError as exc:
            return _failure(attempt, _connect_reason(exc), _short(exc))
        elapsed = self._clock() - started
        chain = certs.der_chain_facts(_served_chain(tls), self._facts)
        if not chain:
            return _failure(attempt, EndpointReason.HANDSHAKE_FAILURE, "no certificate served")
        if verify_code:
            verify_error = _VERIFY_CODES.get(verify_code)
            if verify_error is None and verify_code in _MISSING_ISSUER_CODES:
                # A leaf served alone that names where its issuer lives (AIA, as every public CA's leaf does) is
                # missing its intermediate; without AIA the issuer is most likely a CA the client does not know.
                alone = len(chain) == 1 and not chain[0].self_signed and bool(chain[0].ca_issuers)
                verify_error = VerifyReason.INCOMPLETE_CHAIN if alone else VerifyReason.UNKNOWN_CA
            verify_error = verify_error or VerifyReason.INVALID
        cipher = tls.cipher()
        return AddressResult(
            address=attempt.address,
            chain=chain,
            verified=verify_error is None,
            verify_error=verify_error,
            # version() is None when verification failed mid-handshake; cipher() still names the protocol.
            tls_version=tls.version() or (cipher[1] if cipher else ""),
            cipher=cipher[0] if cipher else "",
            handshake_seconds=elapsed,
        )

    def _context(self, config: EndpointConfig) -> ssl.SSLContext | tuple[EndpointReason, str]:
        """Return the client context for these files as they are now (rebuilt when one changes), or why not.

        Keyed by the paths: a context whose files changed is replaced, never kept beside the new one, and at most
        ``MAX_CONTEXTS`` are kept (least recently used dropped), so memory stays flat however often files change.
        """
        paths = tuple(path for path in (config.ca_file, config.client_cert, config.client_key) if path)
        stamp = tuple(_stamp(path) for path in paths)
        with self._lock:
            cached = self._contexts.get(paths)
            if cached is not None and cached[0] == stamp:
                self._contexts.move_to_end(paths)
                return cached[1]
            self._contexts.pop(paths, None)
            special = next((path for path in paths if _special(path)), None)
            if special is not None:  # a FIFO would block the handshake's thread in open(): refuse it
                reason = EndpointReason.CA_FILE_UNAVAILABLE if special == config.ca_file else None
                return reason or EndpointReason.CLIENT_CERT_UNAVAILABLE, f"{special}: not a regular file"
            try:
                context = ssl.create_default_context(cafile=config.ca_file)
            except (OSError, ssl.SSLError, ValueError) as exc:
                return EndpointReason.CA_FILE_UNAVAILABLE, f"ca_file: {_short(exc)}"
            if config.client_cert:
                try:
                    context.load_cert_chain(config.client_cert, config.client_key)
                except (OSError, ssl.SSLError, ValueError) as exc:
                    return EndpointReason.CLIENT_CERT_UNAVAILABLE, f"client_cert/client_key: {_short(exc)}"
            self._contexts[paths] = (stamp, context)
            while len(self._contexts) > MAX_CONTEXTS:
                self._contexts.popitem(last=False)
            return context

    @property
    def cached_contexts(self) -> int:
        """Return how many client TLS contexts are cached (bounded by ``MAX_CONTEXTS``)."""
        return len(self._contexts)


def series_key(config: EndpointConfig) -> tuple[str, str]:
    """Return what names an endpoint's series: (endpoint, server_name), as on its EndpointResult."""
    return config.address, config.sni or ""


def _served_chain(tls: ssl.SSLSocket) -> list[bytes]:
    """Return the chain as served, in order, whatever verification said."""
    public = getattr(tls, "get_unverified_chain", None)  # Python 3.13+
    raw = public() if public is not None else tls._sslobj.get_unverified_chain()  # type: ignore[attr-defined]
    return [c if isinstance(c, bytes) else c.public_bytes(_ENCODING_DER) for c in raw or []]


def _tls_reason(exc: ssl.SSLError) -> EndpointReason:
    if exc.reason in _PLAINTEXT_REASONS:
        return EndpointReason.PLAINTEXT
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return EndpointReason.RESET
    return EndpointReason.HANDSHAKE_FAILURE


def _connect_reason(exc: OSError) -> EndpointReason:
    if isinstance(exc, TimeoutError):
        return EndpointReason.TIMEOUT
    if isinstance(exc, ConnectionRefusedError):
        return EndpointReason.REFUSED
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        return EndpointReason.RESET
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return EndpointReason.UNREACHABLE
    return EndpointReason.ERROR


def _failure(attempt: _Attempt, reason: EndpointReason, detail: str) -> AddressResult:
    return AddressResult(address=attempt.address, error=reason, detail=detail)


def _short(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)[:200] or type(exc).__name__


def _special(path: str) -> bool:
    """Tell whether a path exists and is not a regular file (a FIFO, a device, a directory)."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False  # missing: ssl says so with its own message


def _stamp(path: str) -> _Stamp:
    try:
        info = os.stat(path)
    except OSError:
        return (0, 0, 0, 0)
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
