"""IPv4 fragmentation as the kernel does it (RFC 791), independent of client code, for the tests."""

from __future__ import annotations

import struct

from tests.client.packets import reference_checksum


def fragment(packet: bytes, mtu: int, *, ident: int | None = None) -> list[bytes]:
    """Split a whole IPv4 packet into fragments of at most ``mtu`` bytes, in order.

    Each fragment carries the packet's header (options included, for simplicity),
    its own total length, offset and more-fragments flag, and a fresh checksum.
    ``ident`` replaces the packet's identification.
    """
    ihl = (packet[0] & 0x0F) * 4
    header, payload = bytearray(packet[:ihl]), packet[ihl:]
    if ident is not None:
        struct.pack_into("!H", header, 4, ident)
    step = (mtu - ihl) // 8 * 8
    pieces = []
    for offset in range(0, len(payload), step):
        chunk = payload[offset:offset + step]
        more = offset + step < len(payload)
        head = bytearray(header)
        struct.pack_into("!HHH", head, 2, ihl + len(chunk), struct.unpack_from("!H", head, 4)[0],
                         (0x2000 if more else 0) | offset // 8)
        struct.pack_into("!H", head, 10, 0)
        struct.pack_into("!H", head, 10, reference_checksum(bytes(head)))
        pieces.append(bytes(head) + chunk)
    return pieces
