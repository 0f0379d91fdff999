"""A PKCS#12 file's MAC, checked by hand (RFC 7292): tells a wrong password from content cryptography can't read.

cryptography says "Invalid password or PKCS12 data" for both; the MAC over the content decides which it is.
Pure: bytes in, a verdict out.
"""

from __future__ import annotations

import hashlib
import hmac

from gunicorn_cert_exporter.sources.der import CONTEXT_0, INTEGER, OCTET_STRING, OID, SEQUENCE, expect

_DIGESTS = {
    bytes.fromhex("2b0e03021a"): "sha1",
    bytes.fromhex("608648016503040204"): "sha224",
    bytes.fromhex("608648016503040201"): "sha256",
    bytes.fromhex("608648016503040202"): "sha384",
    bytes.fromhex("608648016503040203"): "sha512",
}
_MAX_ITERATIONS = 1_000_000  # past this a hostile file would hold the scan: don't tell


def mac_verifies(data: bytes, password: bytes | None) -> bool | None:
    """Tell whether the PFX's MAC verifies with ``password``; None when there is no MAC this code can check."""
    try:
        content, digest_oid, expected, salt, iterations = _mac_parts(data)
    except ValueError:  # DerError: not the DER this code expects
        return None
    name = _DIGESTS.get(digest_oid)
    if name is None or not 0 < iterations <= _MAX_ITERATIONS:
        return None  # PBMAC1, an unknown digest, or an absurd iteration count
    secret = b"" if password is None else password.decode("utf-8", "replace").encode("utf-16-be") + b"\0\0"
    key = _kdf(name, secret, salt, iterations, hashlib.new(name).digest_size)
    return hmac.compare_digest(hmac.new(key, content, name).digest(), expected)


def _mac_parts(data: bytes) -> tuple[bytes, bytes, bytes, bytes, int]:
    """Return the authenticated content, MAC digest OID, MAC, salt and iteration count of a DER PFX."""
    start, end = expect(data, 0, SEQUENCE)[1:]
    _, after_version = expect(data, start, INTEGER)[1:]
    auth_start, auth_end = expect(data, after_version, SEQUENCE)[1:]
    _, after_type = expect(data, auth_start, OID)[1:]
    wrapped, _ = expect(data, after_type, CONTEXT_0)[1:]
    content_start, content_end = expect(data, wrapped, OCTET_STRING)[1:]
    if auth_end >= end:
        raise ValueError("no MAC")
    mac_start, mac_end = expect(data, auth_end, SEQUENCE)[1:]
    info_start, info_end = expect(data, mac_start, SEQUENCE)[1:]
    alg_start, alg_end = expect(data, info_start, SEQUENCE)[1:]
    oid_start, oid_end = expect(data, alg_start, OID)[1:]
    digest_start, digest_end = expect(data, alg_end, OCTET_STRING)[1:]
    salt_start, salt_end = expect(data, info_end, OCTET_STRING)[1:]
    iterations = 1
    if salt_end < mac_end:
        count_start, count_end = expect(data, salt_end, INTEGER)[1:]
        iterations = int.from_bytes(data[count_start:count_end], "big", signed=True)
    return (
        data[content_start:content_end],
        data[oid_start:oid_end],
        data[digest_start:digest_end],
        data[salt_start:salt_end],
        iterations,
    )


def _kdf(name: str, secret: bytes, salt: bytes, iterations: int, size: int) -> bytes:
    """Derive the MAC key (RFC 7292 appendix B.2, ID 3)."""
    u, v = hashlib.new(name).digest_size, hashlib.new(name).block_size
    diversifier = bytes([3]) * v

    def stretch(value: bytes) -> bytes:
        if not value:
            return b""
        length = v * -(-len(value) // v)
        return (value * -(-length // len(value)))[:length]

    block = bytearray(stretch(salt) + stretch(secret))
    out = b""
    while len(out) < size:
        a = hashlib.new(name, diversifier + bytes(block)).digest()
        for _ in range(iterations - 1):
            a = hashlib.new(name, a).digest()
        out += a
        b = int.from_bytes((a * -(-v // u))[:v], "big") + 1
        for j in range(0, len(block), v):
            value = (int.from_bytes(block[j : j + v], "big") + b) % (1 << (8 * v))
            block[j : j + v] = value.to_bytes(v, "big")
    return out[:size]
