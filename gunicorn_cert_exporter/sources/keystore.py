"""Java keystores (JKS, JCEKS): the certificates of every entry, read in the clear as ``keytool -list`` does. Pure.

The format is OpenJDK's ``sun.security.provider.JavaKeyStore`` (JKS) and ``com.sun.crypto.provider.JceKeyStore``
(JCEKS): a magic number, a version, a count of entries, each entry tagged (1 private key with its certificate
chain, 2 trusted certificate, 3 JCEKS secret key), then a SHA-1 digest keyed by the store password. Private and
secret keys are skipped, never decrypted. Every count and length is checked against the bytes that remain before
anything is sliced, so a short file that claims 2^31 entries is refused at once.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from gunicorn_cert_exporter.sources import javaser

JKS_MAGIC = bytes.fromhex("feedfeed")
JCEKS_MAGIC = bytes.fromhex("cececece")
_PRIVATE_KEY, _TRUSTED_CERT, _SECRET_KEY = 1, 2, 3
_DIGEST_SIZE = 20
_WHITENER = b"Mighty Aphrodite"  # what JavaKeyStore appends to the password before the data


class KeystoreError(ValueError):
    """The bytes are not a keystore this reader understands, or end too soon."""


@dataclass(frozen=True, slots=True)
class Keystore:
    """The certificate-bearing content of a keystore: each entry's alias and its certificates (DER), in order."""

    kind: str  # "JKS" or "JCEKS"
    entries: tuple[tuple[str, tuple[bytes, ...]], ...]
    secret_keys: int
    body: bytes  # what the digest covers
    digest: bytes


def is_keystore(data: bytes) -> bool:
    """Tell a JKS or JCEKS store by its magic number."""
    return data[:4] in (JKS_MAGIC, JCEKS_MAGIC)


def password_matches(store: Keystore, password: bytes) -> bool:
    """Check the store's keyed digest: SHA-1 over the password as UTF-16BE, "Mighty Aphrodite", and the data."""
    secret = password.decode("utf-8", "replace").encode("utf-16-be")
    return hmac.compare_digest(hashlib.sha1(secret + _WHITENER + store.body).digest(), store.digest)  # noqa: S324


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    @property
    def left(self) -> int:
        return len(self.data) - _DIGEST_SIZE - self.pos

    def take(self, size: int, what: str) -> bytes:
        if size > self.left:
            raise KeystoreError(f"{what} claims {size} bytes at offset {self.pos}, {max(self.left, 0)} remain")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def number(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "big")

    def count(self, what: str, least: int) -> int:
        value = self.number(4, what)
        if value * least > self.left:
            raise KeystoreError(f"{value} {what} claimed, only {self.left} bytes remain")
        return value

    def utf(self, what: str) -> str:
        # Java's modified UTF-8: like UTF-8 but NUL as C0 80; decoding with "replace" keeps the alias readable.
        return self.take(self.number(2, what), what).decode("utf-8", "replace")


def read(data: bytes) -> Keystore:
    """Read the aliases and certificates of a JKS or JCEKS store; raise KeystoreError saying where it breaks."""
    if len(data) < 12 + _DIGEST_SIZE or not is_keystore(data):
        raise KeystoreError("not a JKS or JCEKS keystore (magic number, version, count and digest)")
    kind = "JKS" if data[:4] == JKS_MAGIC else "JCEKS"
    cursor = _Cursor(data)
    cursor.pos = 4
    version = cursor.number(4, "version")
    if version not in (1, 2):
        raise KeystoreError(f"keystore version {version} (1 and 2 are known)")
    entries: list[tuple[str, tuple[bytes, ...]]] = []
    secret_keys = 0
    for _ in range(cursor.count("entries", 14)):  # the smallest entry: tag, alias length, date
        tag = cursor.number(4, "entry tag")
        alias = cursor.utf("alias")
        cursor.take(8, "entry date")
        if tag == _PRIVATE_KEY:
            cursor.take(cursor.number(4, "protected key length"), "protected key")
            chain = tuple(_certificate(cursor, version) for _ in range(cursor.count("chain certificates", 4)))
            entries.append((alias, chain))
        elif tag == _TRUSTED_CERT:
            entries.append((alias, (_certificate(cursor, version),)))
        elif tag == _SECRET_KEY and kind == "JCEKS":
            _skip_sealed_key(cursor)
            secret_keys += 1
        else:
            raise KeystoreError(f"entry tag {tag} at offset {cursor.pos - 4}")
    if cursor.left != 0:
        raise KeystoreError(f"{cursor.left} bytes after the last entry, before the digest")
    return Keystore(kind, tuple(entries), secret_keys, data[:-_DIGEST_SIZE], data[-_DIGEST_SIZE:])


def _certificate(cursor: _Cursor, version: int) -> bytes:
    if version == 2:
        cursor.utf("certificate type")
    return cursor.take(cursor.number(4, "certificate length"), "certificate")


def _skip_sealed_key(cursor: _Cursor) -> None:
    end = len(cursor.data) - _DIGEST_SIZE
    try:
        cursor.pos = javaser.skip_object(cursor.data[:end], cursor.pos)
    except javaser.SerialError as exc:
        raise KeystoreError(f"secret key entry: {exc}") from None
