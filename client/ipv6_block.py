"""IPv6 refused at the TUN while a full tunnel is up: ICMPv6 "administratively prohibited".

Theory of operation. The client does not tunnel IPv6. With a full tunnel the
``RouteManager`` routes all of IPv6 into the TUN (::/1 and 8000::/1, as the IPv4
default goes in as two halves) so that nothing leaves by the host's own IPv6
routes. Each IPv6 packet the datapath reads there is answered, from its
destination to its source, with an ICMPv6 Destination Unreachable, code 1
(communication with destination administratively prohibited; RFC 4443 3.1),
quoting as much of it as fits in 1280 bytes. The host's stack hands that to
the app at once (EACCES on a TCP connect), so it falls back to IPv4 (Happy
Eyeballs) instead of waiting for a timeout.

Never answered (RFC 4443 2.4 e): ICMPv6 error messages (types below 128),
packets whose upper-layer header cannot be seen (a truncated extension header
chain, a fragment other than the first), packets from the unspecified address
or to or from a multicast address. The answers are rate-limited by a token
bucket, so a flood of IPv6 into the TUN cannot be turned into a flood back.

Sans-IO: bytes and ``now`` in, bytes out.
"""

from __future__ import annotations

import struct

from client.packet import internet_checksum

__all__ = ["icmpv6_prohibited", "Ipv6Refusal", "IPV6_MIN_MTU"]

#: The IPv6 minimum MTU: an ICMPv6 error never exceeds it (RFC 4443 2.4 c).
IPV6_MIN_MTU = 1280

_HEADER = 40
_ICMPV6 = 58
_DEST_UNREACHABLE = 1
_ADMIN_PROHIBITED = 1
_HOP_LIMIT = 64
_UNSPECIFIED = bytes(16)
# Extension headers whose length is (byte 1 + 1) * 8: hop-by-hop, routing, destination options.
_EIGHT_OCTET_UNITS = {0, 43, 60}
_FRAGMENT, _AUTH = 44, 51
_MAX_EXTENSIONS = 8            # more than any real packet carries; bounds the walk


def icmpv6_prohibited(packet) -> bytes | None:
    """The ICMPv6 "administratively prohibited" answer to an IPv6 ``packet``, or None when
    it must not be answered (see the module docstring) or is not IPv6 at all.

    The answer goes from the packet's destination to its source, hop limit 64, and quotes
    the packet (up to its payload length, or all of it for a jumbogram's 0) as far as the
    whole answer stays within 1280 bytes; its checksum covers the IPv6 pseudo-header.
    Never raises on any bytes."""
    if len(packet) < _HEADER or packet[0] >> 4 != 6:
        return None
    source, destination = bytes(packet[8:24]), bytes(packet[24:40])
    if source == _UNSPECIFIED or source[0] == 0xFF or destination[0] == 0xFF:
        return None
    if not _answerable_upper_layer(packet):
        return None
    payload_length = packet[4] << 8 | packet[5]
    length = min(len(packet), _HEADER + payload_length) if payload_length else len(packet)
    quoted = bytes(packet[:min(length, IPV6_MIN_MTU - _HEADER - 8)])
    message = bytearray(struct.pack("!BBHI", _DEST_UNREACHABLE, _ADMIN_PROHIBITED, 0, 0) + quoted)
    pseudo = destination + source + struct.pack("!I3xB", len(message), _ICMPV6)
    struct.pack_into("!H", message, 2, internet_checksum(pseudo + message))
    header = struct.pack("!IHBB16s16s", 6 << 28, len(message), _ICMPV6, _HOP_LIMIT,
                         destination, source)
    return header + bytes(message)


def _answerable_upper_layer(packet) -> bool:
    """Walk the extension headers to the upper-layer one: False for an ICMPv6 error, a
    non-first fragment, or a chain that is cut short or too long to follow."""
    next_header, offset = packet[6], _HEADER
    for _ in range(_MAX_EXTENSIONS):
        if next_header == _ICMPV6:
            return offset < len(packet) and packet[offset] >= 128
        if next_header not in _EIGHT_OCTET_UNITS and next_header not in (_FRAGMENT, _AUTH):
            return True                                 # TCP, UDP, no next header, ...
        if offset + 8 > len(packet):
            return False
        if next_header == _FRAGMENT:
            if (packet[offset + 2] << 8 | packet[offset + 3]) & 0xFFF8:
                return False                            # not the first fragment
            size = 8
        elif next_header == _AUTH:
            size = (packet[offset + 1] + 2) * 4
        else:
            size = (packet[offset + 1] + 1) * 8
        if offset + size > len(packet):
            return False
        next_header, offset = packet[offset], offset + size
    return False


class Ipv6Refusal:
    """Answers the IPv6 packets read from the TUN, at most ``burst`` at once and ``rate``
    a second on average; what is over the limit, or must not be answered, gets nothing."""

    def __init__(self, *, rate: float = 100.0, burst: int = 50) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate {rate} and burst {burst} must be positive")
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last: float | None = None
        self.answered = 0
        """Packets answered."""
        self.limited = 0
        """Packets left unanswered because of the rate limit."""

    def answer(self, packet, now: float) -> bytes | None:
        """The answer to write back to the TUN for ``packet`` read at ``now`` (seconds,
        monotonic), or None."""
        reply = icmpv6_prohibited(packet)
        if reply is None:
            return None
        if not self._take(now):
            self.limited += 1
            return None
        self.answered += 1
        return reply

    def _take(self, now: float) -> bool:
        if self._last is not None:
            self._tokens = min(self._burst, self._tokens + max(0.0, now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
