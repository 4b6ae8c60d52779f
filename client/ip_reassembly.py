"""IPv4 reassembly of the fragments the local kernel writes to the TUN.

Theory of operation. An app's UDP datagram or ping that is larger than the
TUN's MTU (the gateway's ``mtu`` hint, anything from 576 to 65535) leaves the
kernel as IPv4 fragments (RFC 791). The UDP and ICMP paths carry whole
datagrams, so ``Reassembler.push(fragment, now)`` collects the fragments of
each datagram, keyed by (source, destination, protocol, identification), and
returns the whole packet once every byte from 0 to the end of the last
fragment is there: the first fragment's header (options included) with the
fragment fields cleared, the new total length and checksum, then the payload.

Bounded: at most ``max_datagrams`` datagrams in progress and ``max_bytes`` of
payload held in all (the oldest datagram goes to make room); one not complete
``timeout`` seconds after its first fragment is dropped (Linux's ipfrag_time is
30 s). A fragment that overlaps another, or would make the datagram longer than
an IPv4 packet can be, drops its whole datagram (as RFC 5722 does for IPv6; the
local kernel never sends such). Sans-IO: time is always passed in.
"""

from __future__ import annotations

import struct

from client import packet as pk

_MORE_FRAGMENTS = 0x2000
_OFFSET = 0x1FFF
_DONT_FRAGMENT = 0x4000
_FIELDS = struct.Struct("!2xHHH")       # total length, identification, flags and offset
#: Fragments one datagram may have (a 65535-byte datagram at the smallest MTU the
#: gateway may push, 576, takes 118); more drop it, keeping the overlap checks cheap.
MAX_FRAGMENTS = 1024


class _Datagram:
    __slots__ = ("started", "header", "parts", "held", "length")

    def __init__(self, now: float) -> None:
        self.started = now
        self.header: bytes | None = None            # the first fragment's IPv4 header
        self.parts: dict[int, bytes] = {}           # offset -> payload
        self.held = 0                               # payload bytes in ``parts``
        self.length: int | None = None              # payload length, once the last fragment came


class Reassembler:
    """Joins the IPv4 fragments of datagrams; bounded in datagrams, bytes and time."""

    def __init__(self, *, max_datagrams: int = 64, max_bytes: int = 4 * 1024 * 1024,
                 timeout: float = 30.0) -> None:
        if max_datagrams < 1 or max_bytes < 1 or timeout <= 0:
            raise ValueError("max_datagrams, max_bytes and timeout must be positive")
        self._max_datagrams = max_datagrams
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._datagrams: dict[tuple[bytes, int], _Datagram] = {}
        self._held = 0
        self.dropped = 0
        """Fragments thrown away: malformed, overlapping, too long, timed out or evicted."""

    @property
    def held(self) -> int:
        """Payload bytes held for datagrams not yet complete."""
        return self._held

    def push(self, fragment, now: float) -> bytes | None:
        """Add one fragment; the whole IPv4 packet once it is complete, else None.

        ``fragment`` must be an IPv4 fragment whose header was validated (IHL and
        total length fit the buffer); bytes past its total length are ignored.
        """
        self.expire(now)
        ihl = (fragment[0] & 0x0F) << 2
        total, ident, frag = _FIELDS.unpack_from(fragment)
        offset = (frag & _OFFSET) << 3
        data = bytes(fragment[ihl:total])
        end = offset + len(data)
        more = bool(frag & _MORE_FRAGMENTS)
        key = (bytes(fragment[9:10]) + bytes(fragment[12:20]), ident)
        datagram = self._datagrams.get(key)
        if (more and (not data or len(data) % 8)) or end + 20 > 0xFFFF:
            self.dropped += 1                       # RFC 791: only the last may be ragged
            if datagram is not None:
                self._drop(key)
            return None
        if datagram is None:
            while len(self._datagrams) >= self._max_datagrams:
                self._drop(next(iter(self._datagrams)))
            datagram = self._datagrams[key] = _Datagram(now)
        if not self._fits(datagram, offset, end, more):
            self.dropped += 1
            self._drop(key)
            return None
        if offset in datagram.parts:                # the same fragment again
            return None
        if len(datagram.parts) >= MAX_FRAGMENTS:
            self.dropped += 1
            self._drop(key)
            return None
        datagram.parts[offset] = data
        datagram.held += len(data)
        self._held += len(data)
        if offset == 0:
            datagram.header = bytes(fragment[:ihl])
        if not more:
            datagram.length = end
        while self._held > self._max_bytes and self._datagrams:
            self._drop(next(iter(self._datagrams)))
        if key not in self._datagrams or datagram.header is None or datagram.held != datagram.length:
            return None
        if len(datagram.header) + datagram.length > 0xFFFF:     # options in the first fragment
            self._drop(key)
            return None
        return self._join(key, datagram)

    def _fits(self, datagram: _Datagram, offset: int, end: int, more: bool) -> bool:
        """False when the fragment overlaps another or disagrees about the datagram's end."""
        if datagram.length is not None and (end > datagram.length or (not more and end != datagram.length)):
            return False
        if not more and any(start + len(part) > end for start, part in datagram.parts.items()):
            return False
        same = datagram.parts.get(offset)
        if same is not None:
            return len(same) == end - offset
        return all(start + len(part) <= offset or start >= end
                   for start, part in datagram.parts.items())

    def _join(self, key: tuple[bytes, int], datagram: _Datagram) -> bytes:
        del self._datagrams[key]
        self._held -= datagram.held
        header = bytearray(datagram.header)
        frag = _FIELDS.unpack_from(header)[2]
        struct.pack_into("!H", header, 2, len(header) + datagram.length)
        struct.pack_into("!H", header, 6, frag & _DONT_FRAGMENT)
        struct.pack_into("!H", header, 10, 0)
        struct.pack_into("!H", header, 10, pk.internet_checksum(header))
        return b"".join([bytes(header), *(datagram.parts[o] for o in sorted(datagram.parts))])

    def _drop(self, key: tuple[bytes, int]) -> None:
        datagram = self._datagrams.pop(key)
        self._held -= datagram.held
        self.dropped += len(datagram.parts)

    def expire(self, now: float) -> None:
        """Drop the datagrams still incomplete ``timeout`` seconds after their first fragment."""
        # Insertion order is the order of first fragments, so the stale ones lead.
        for key in list(self._datagrams):
            if now - self._datagrams[key].started < self._timeout:
                break
            self._drop(key)
