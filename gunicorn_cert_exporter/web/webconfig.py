"""The exporter-toolkit web config: TLS for the exporter's own server and bcrypt basic auth."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from typing import Literal

import bcrypt
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from gunicorn_cert_exporter.config import ConfigError, describe_errors, read_config_text

_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSServerConfig(_Strict):
    """``tls_server_config`` as in exporter-toolkit."""

    cert_file: str
    key_file: str
    client_auth_type: Literal[
        "NoClientCert",
        "RequestClientCert",
        "RequireAnyClientCert",
        "VerifyClientCertIfGiven",
        "RequireAndVerifyClientCert",
    ] = "NoClientCert"
    client_ca_file: str | None = None
    min_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS12"
    max_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS13"


class WebConfig(_Strict):
    """The whole ``--web.config.file``."""

    tls_server_config: TLSServerConfig | None = None
    basic_auth_users: dict[str, str] = {}
    http_server_config: dict[str, object] = {}


def load(path: str) -> WebConfig:
    """Read and validate a web config file; raise ConfigError listing every problem."""
    text = read_config_text(path)
    try:
        raw = yaml.safe_load(text) or {}
        config = WebConfig.model_validate(raw)
    except yaml.YAMLError:
        raise ConfigError([f"{path}: invalid YAML"]) from None
    except ValidationError as exc:
        raise ConfigError([f"{path}: {problem}" for problem in describe_errors(exc)]) from None
    tls = config.tls_server_config
    verifies_clients = tls is not None and tls.client_auth_type in (
        "VerifyClientCertIfGiven",
        "RequireAndVerifyClientCert",
    )
    if tls is not None and verifies_clients and not tls.client_ca_file:
        raise ConfigError([f"{path}: tls_server_config.client_ca_file is required for {tls.client_auth_type}"])
    for user, hashed in config.basic_auth_users.items():
        if not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ConfigError([f"{path}: basic_auth_users.{user}: not a bcrypt hash"])
    build_context(tls) if tls is not None else None  # fail now, at load, rather than on the first client
    return config


def build_context(tls: TLSServerConfig) -> ssl.SSLContext:
    """Build a server context from the files as they are now."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _TLS_VERSIONS[tls.min_version]
    context.maximum_version = _TLS_VERSIONS[tls.max_version]
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.client_ca_file:
            context.load_verify_locations(tls.client_ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError([f"tls_server_config: can't load certificate, key or CA: {type(exc).__name__}"]) from None
    if tls.client_auth_type in ("RequireAnyClientCert", "RequireAndVerifyClientCert"):
        context.verify_mode = ssl.CERT_REQUIRED
    elif tls.client_auth_type != "NoClientCert":
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


_RECHECK_SECONDS = 1.0
_log = logging.getLogger("gunicorn_cert_exporter.web")


class ReloadingContext:
    """An SSL context rebuilt whenever the cert, key or client CA file changes on disk."""

    def __init__(self, tls: TLSServerConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._tls = tls
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp = self._files_stamp()
        self._checked_at = clock()
        self._context = build_context(tls)

    def fresh(self) -> ssl.SSLContext:
        """Build a new context from the files as they are now."""
        return build_context(self._tls)

    def current(self) -> ssl.SSLContext:
        """Return a context for the files as they are now (the old one if the new files don't load).

        Called on every handshake: the files are looked at once a second at most, and a pair that fails to load is
        not tried again until the files change again (a client can't make every handshake reload a broken pair).
        """
        now = self._clock()
        if now - self._checked_at < _RECHECK_SECONDS:
            return self._context
        with self._lock:
            self._checked_at = now
            stamp = self._files_stamp()
            if stamp == self._stamp:
                return self._context
            self._stamp = stamp  # remembered whether the new files load or not
            try:
                self._context = build_context(self._tls)
            except ConfigError:
                _log.warning("web TLS: the new certificate, key or client CA does not load; serving the last good one")
        return self._context

    def _files_stamp(self) -> tuple[int, ...]:
        paths = (self._tls.cert_file, self._tls.key_file, self._tls.client_ca_file)
        stamp: list[int] = []
        for path in paths:
            try:
                info = os.stat(path) if path else None
            except OSError:
                info = None
            stamp.extend((info.st_ino, info.st_mtime_ns, info.st_size) if info else (0, 0, 0))
        return tuple(stamp)


def bcrypt_cost(hashed: bytes) -> int:
    """Return the cost (log2 rounds) of a bcrypt hash, or 0 if it has none."""
    parts = hashed.split(b"$")
    return int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else 0


class BasicAuth:
    """Check basic-auth credentials against bcrypt hashes; the same cost whether the user exists or not."""

    def __init__(self, users: dict[str, str]) -> None:
        self._users = {u.encode(): h.encode() for u, h in users.items()}
        self._key = os.urandom(32)
        self._good: set[bytes] = set()
        # An unknown user is checked against a hash as slow as the slowest configured one: timing tells nothing.
        cost = max((bcrypt_cost(h) for h in self._users.values()), default=4)
        self.dummy_hash = bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(rounds=max(4, cost)))

    @property
    def enabled(self) -> bool:
        """Tell whether any user is configured."""
        return bool(self._users)

    def _token(self, raw_user: bytes, raw_password: bytes) -> bytes:
        hashed = self._users.get(raw_user, b"")
        return hmac.new(self._key, raw_user + b"\0" + raw_password + b"\0" + hashed, hashlib.sha256).digest()

    def remembered(self, user: str, password: str) -> bool:
        """Tell, cheaply, whether these credentials already passed a full check."""
        return self._token(user.encode("utf-8", "replace"), password.encode("utf-8", "replace")) in self._good

    def check(self, user: str, password: str) -> bool:
        """Tell whether the credentials are valid (bcrypt's cost, unless they passed before)."""
        raw_user, raw_password = user.encode("utf-8", "replace"), password.encode("utf-8", "replace")
        # Remember successes by a keyed digest so each scrape doesn't pay bcrypt's cost again.
        token = self._token(raw_user, raw_password)
        if token in self._good:
            return True
        hashed = self._users.get(raw_user)
        ok = bcrypt.checkpw(raw_password[:72], hashed or self.dummy_hash) and hashed is not None
        if ok:
            self._good.add(token)
        return ok
