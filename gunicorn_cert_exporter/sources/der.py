"""One bounded DER TLV reader: a tag, a definite length that fits the bytes, a value. Pure.

Certificates, PKCS#12 MACs, keystores and CRLs read DER headers through this module only, so a length that
claims more than the bytes hold is refused in one place, before anything is sliced or allocated.
"""

from __future__ import annotations

from typing import NamedTuple

SEQUENCE, INTEGER, OCTET_STRING, OID, CONTEXT_0 = 0x30, 0x02, 0x04, 0x06, 0xA0
_MAX_LENGTH_OCTETS = 4  # a length over 4 GiB is never a certificate, a CRL or a keystore


class DerError(ValueError):
    """The bytes at a position are not one complete DER element."""


class Element(NamedTuple):
    """One DER element: its tag, where its value starts and where it ends (``data[start:end]``)."""

    tag: int
    start: int
    end: int


def element(data: bytes, pos: int = 0) -> Element:
    """Read the element at ``pos``; raise DerError unless its header is definite and its value fits in ``data``."""
    if pos + 2 > len(data):
        raise DerError(f"truncated header at {pos}")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first & 0x80:
        count = first & 0x7F
        if not 0 < count <= _MAX_LENGTH_OCTETS:
            raise DerError("indefinite or huge length")
        if pos + count > len(data):
            raise DerError("truncated length")
        length, pos = int.from_bytes(data[pos : pos + count], "big"), pos + count
    else:
        length = first
    if pos + length > len(data):
        raise DerError(f"length {length} runs past the end of the data")
    return Element(tag, pos, pos + length)


def expect(data: bytes, pos: int, tag: int) -> Element:
    """Read the element at ``pos`` and insist on its tag."""
    found = element(data, pos)
    if found.tag != tag:
        raise DerError(f"expected tag {tag:#x} at {pos}, found {found.tag:#x}")
    return found


def first(data: bytes) -> bytes | None:
    """Return the first element of ``data`` by its own length (openssl reads a DER file this way), or None."""
    try:
        return data[: element(data).end]
    except DerError:
        return None


def complete(data: bytes) -> bool:
    """Tell whether ``data`` is exactly one element (a truncated file, or one with trailing bytes, is not)."""
    try:
        return element(data).end == len(data)
    except DerError:
        return False


def opens_with(data: bytes, *tags: int) -> bool:
    """Tell whether ``data`` is a SEQUENCE whose first members have these tags (e.g. a PFX: INTEGER 3 ...)."""
    try:
        outer = expect(data, 0, SEQUENCE)
        pos = outer.start
        for tag in tags:
            pos = expect(data, pos, tag).end
    except DerError:
        return False
    return True
