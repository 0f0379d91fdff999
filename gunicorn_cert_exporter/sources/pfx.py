"""A PKCS#12 file's MAC, checked by hand (RFC 7292): tells a wrong password from content cryptography can't read.

cryptography says "Invalid password or PKCS12 data" for both; the MAC over the content decides which it is.
Pure: bytes in, a verdict out.
"""

from __future__ import annotations

import hashlib
import hmac

_DIGESTS = {
    bytes.fromhex("2b0e03021a"): "sha1",
    bytes.fromhex("608648016503040204"): "sha224",
    bytes.fromhex("608648016503040201"): "sha256",
    bytes.fromhex("608648016503040202"): "sha384",
    bytes.fromhex("608648016503040203"): "sha512",
}
_MAX_ITERATIONS = 1_000_000  # past this a hostile file would hold the scan: don't tell
_SEQUENCE, _INTEGER, _OCTET_STRING, _OID, _CONTEXT_0 = 0x30, 0x02, 0x04, 0x06, 0xA0


def mac_verifies(data: bytes, password: bytes | None) -> bool | None:
    """Tell whether the PFX's MAC verifies with ``password``; None when there is no MAC this code can check."""
    try:
        content, digest_oid, expected, salt, iterations = _mac_parts(data)
    except (ValueError, IndexError):
        return None
    name = _DIGESTS.get(digest_oid)
    if name is None or not 0 < iterations <= _MAX_ITERATIONS:
        return None  # PBMAC1, an unknown digest, or an absurd iteration count
    secret = b"" if password is None else password.decode("utf-8", "replace").encode("utf-16-be") + b"\0\0"
    key = _kdf(name, secret, salt, iterations, hashlib.new(name).digest_size)
    return hmac.compare_digest(hmac.new(key, content, name).digest(), expected)


def _mac_parts(data: bytes) -> tuple[bytes, bytes, bytes, bytes, int]:
    """Return the authenticated content, MAC digest OID, MAC, salt and iteration count of a DER PFX."""
    _, start, end = _expect(data, 0, _SEQUENCE)
    _, _, after_version = _expect(data, start, _INTEGER)
    _, auth_start, auth_end = _expect(data, after_version, _SEQUENCE)
    _, _, after_type = _expect(data, auth_start, _OID)
    _, wrapped, _ = _expect(data, after_type, _CONTEXT_0)
    _, content_start, content_end = _expect(data, wrapped, _OCTET_STRING)
    if auth_end >= end:
        raise ValueError("no MAC")
    _, mac_start, mac_end = _expect(data, auth_end, _SEQUENCE)
    _, info_start, info_end = _expect(data, mac_start, _SEQUENCE)
    _, alg_start, alg_end = _expect(data, info_start, _SEQUENCE)
    _, oid_start, oid_end = _expect(data, alg_start, _OID)
    _, digest_start, digest_end = _expect(data, alg_end, _OCTET_STRING)
    _, salt_start, salt_end = _expect(data, info_end, _OCTET_STRING)
    iterations = 1
    if salt_end < mac_end:
        _, count_start, count_end = _expect(data, salt_end, _INTEGER)
        iterations = int.from_bytes(data[count_start:count_end], "big", signed=True)
    return (
        data[content_start:content_end],
        data[oid_start:oid_end],
        data[digest_start:digest_end],
        data[salt_start:salt_end],
        iterations,
    )


def _expect(data: bytes, pos: int, tag: int) -> tuple[int, int, int]:
    """Read the DER element at ``pos`` (definite lengths only); return its tag, value start and end."""
    if data[pos] != tag:
        raise ValueError(f"expected tag {tag:#x} at {pos}")
    length, pos = data[pos + 1], pos + 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4:
            raise ValueError("indefinite or huge length")
        length, pos = int.from_bytes(data[pos : pos + count], "big"), pos + count
    if pos + length > len(data):
        raise ValueError("truncated")
    return tag, pos, pos + length


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
