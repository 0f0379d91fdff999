"""A process's listening TCP sockets, read from /proc with bounded reads: proof that it serves a port."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from gunicorn_cert_exporter.safe_read import read_regular

_LISTEN = "0A"
_TABLE_CAP = 32 * 1024 * 1024  # ~200,000 sockets; past it the table is cut and the proof fails (conservative)
_MAX_FDS = 65536

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Binding:
    """What a master must listen on: a port, and an IP literal (None when the endpoint names a host)."""

    port: int
    host: IPAddress | None = None


@dataclass(frozen=True, slots=True)
class Listener:
    """One listening TCP socket in a process's network namespace."""

    address: IPAddress
    port: int
    inode: int


def socket_inodes(pid: int) -> set[int]:
    """Return the inodes of every socket the process holds open (raises OSError when /proc can't tell)."""
    inodes = set()
    base = f"/proc/{pid}/fd"
    for count, name in enumerate(os.listdir(base)):
        if count >= _MAX_FDS:
            break
        try:
            target = os.readlink(f"{base}/{name}")
        except OSError:
            continue  # closed while we looked
        if target.startswith("socket:[") and target.endswith("]"):
            inodes.add(int(target[8:-1]))
    return inodes


def _address(hex_address: str) -> IPAddress:
    raw = bytes.fromhex(hex_address)
    # /proc/net/tcp{,6} print each 32-bit word in host (little-endian) order.
    swapped = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(swapped)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_table(text: bytes) -> list[Listener]:
    """Parse /proc/net/tcp or tcp6 into its listening sockets."""
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3].decode() != _LISTEN:
            continue
        host, _, port = fields[1].decode().partition(":")
        try:
            out.append(Listener(address=_address(host), port=int(port, 16), inode=int(fields[9])))
        except ValueError:
            continue  # a line cut by the cap
    return out


def listening(pid: int) -> list[Listener]:
    """Return the listening TCP sockets in the process's network namespace (raises OSError without /proc)."""
    out, read = [], 0
    for table in ("tcp", "tcp6"):
        try:
            out.extend(parse_table(read_regular(f"/proc/{pid}/net/{table}", _TABLE_CAP)))
            read += 1
        except FileNotFoundError:
            continue  # IPv6 disabled
    if not read:  # no /proc (macOS), or the process is gone: nothing is proven, and "not listening" would mislead
        raise FileNotFoundError(f"/proc/{pid}/net/tcp")
    return out


def matches(listener: Listener, binding: Binding) -> bool:
    """Tell whether a listening socket serves the binding (its port, its address or a wildcard)."""
    if listener.port != binding.port:
        return False
    if binding.host is None or listener.address.is_unspecified:
        return True
    wanted = binding.host
    if isinstance(wanted, ipaddress.IPv6Address) and wanted.ipv4_mapped is not None:
        wanted = wanted.ipv4_mapped
    return listener.address == wanted


def held_listeners(pid: int, binding: Binding) -> set[int]:
    """Return the inodes of the sockets this process holds that listen on the binding."""
    wanted = {entry.inode for entry in listening(pid) if matches(entry, binding)}
    return wanted & socket_inodes(pid) if wanted else set()
